"""The function part: KL of the final distribution after patching one position, and bootstrap Spearman."""

from __future__ import annotations

import numpy as np

__all__ = ["spearman", "spearman_boot", "kl_divergence", "patch_positions"]


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 samples or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return float("nan")
    rx, ry = _rank(x) - (x.size + 1) / 2, _rank(y) - (y.size + 1) / 2
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def spearman_boot(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000,
                  rng: np.random.Generator | None = None, level: float = 0.95) -> tuple[float, list[float]]:
    """Spearman correlation and its percentile bootstrap interval, resampling whole groups (rows) with
    replacement, so that samples of one row are never treated as independent."""
    rho = spearman(x, y)
    if n_boot <= 0 or not np.isfinite(rho):
        return rho, []
    rng = rng if rng is not None else np.random.default_rng(0)
    groups = np.asarray(groups)
    ug = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ug]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, ug.size, ug.size)])
        boots[b] = spearman(x[idx], y[idx])
    a = (1 - level) / 2
    boots = boots[np.isfinite(boots)]
    if not boots.size:
        return rho, []
    return rho, [float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))]


def kl_divergence(logp: "object", logq: "object") -> np.ndarray:
    """``KL(p || q)`` per row (nats) from two torch tensors of log-probabilities [n, vocab]."""
    import torch

    with torch.inference_mode():
        v = (logp.exp() * (logp - logq)).double().sum(-1)
    return np.clip(v.cpu().numpy(), 0.0, None)


def patch_positions(seq_len: int, n: int, seed: int, first: int = 4) -> list[int]:
    """``n`` distinct positions (BOS = 0) drawn uniformly from ``first .. seq_len`` (seeded); the first
    few positions, whose context is nearly empty, are skipped when the row is long enough."""
    first = min(first, max(1, seq_len - n + 1))
    pool = np.arange(first, seq_len + 1)
    n = min(n, pool.size)
    rng = np.random.default_rng([seed, 14])
    return sorted(int(p) for p in rng.choice(pool, size=n, replace=False))
