"""Per-token lens metrics on the full vocabulary, and the block bootstrap.

For each predicted position and layer, with ``p`` the model's final distribution and ``q`` a lens's:

* ``ce`` — cross-entropy against the next token, ``-log q(next)`` (nats);
* ``kl`` — KL(p || q) (nats);
* ``entropy`` — entropy of ``q`` (nats);
* ``top1`` — 1 when ``argmax q == argmax p``.

Intervals: documents are the blocks; per-document means are resampled with replacement
(``n_boot`` times, seeded) and the 2.5 / 97.5 percentiles of the mean are reported.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from featuregeo.io.lens_hooks import Readout
from featuregeo.tl.lens.tuned import translate

__all__ = ["METRICS", "token_metrics", "evaluate_lenses", "block_bootstrap"]

METRICS = ("ce", "kl", "entropy", "top1")


def token_metrics(logits, final_p, final_logp, final_top, targets) -> np.ndarray:
    """Metrics of lens ``logits`` [n, V] against the final distribution: ndarray [n, 4] (METRICS order).

    ``final_p`` [n, V] are the final probabilities, ``final_logp`` their logarithms, ``final_top`` [n]
    their argmax.  Few passes over the vocabulary (row sums as batched dot products); ``KL`` sums
    ``p (log p - log q)`` term by term, so it is exactly 0 when the lens is the final distribution.
    ``logits`` is overwritten.
    """
    import torch

    l = logits.float()
    Z = torch.logsumexp(l, dim=-1, keepdim=True)
    ce = Z[:, 0] - l.gather(1, targets[:, None])[:, 0]
    top = (l.argmax(-1) == final_top).float()
    logq = l.sub_(Z)
    kl = torch.bmm(final_p.unsqueeze(1), (final_logp - logq).unsqueeze(2))[:, 0, 0]
    ent = -torch.bmm(torch.exp(logq).unsqueeze(1), logq.unsqueeze(2))[:, 0, 0]
    return torch.stack([ce, kl.clamp_min(0.0), ent, top], 1).double().numpy()


def evaluate_lenses(states: np.ndarray, final_index: int, targets: np.ndarray, readout: Readout,
                    translators: dict, *, chunk: int = 128, dtype: str = "float32", subset=None,
                    progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Logit-lens and tuned-lens metrics for every token and layer.

    Parameters
    ----------
    states : ndarray [n_layers_read, n_rows, T, d]
        Hidden states at the predicted positions.
    final_index : int
        Index (into the first axis) of the model's last block: its logit lens is the final distribution.
    targets : ndarray [n_rows, T] of int
        Next token at each position.
    readout : Readout
    translators : dict index -> (A, b)
        Tuned-lens translators (torch) per index of the first axis; a missing index uses the identity.
    chunk : int, default=128
        Tokens per unembedding.
    dtype : {"float32", "bfloat16"}
        Precision of the lens unembedding matmul (the final distribution is always float32).
    subset : ndarray of int, optional
        A vocabulary subset whose final-distribution mass is reported per token.

    Returns
    -------
    dict
        ``logit`` and ``tuned``: [n_layers_read, n_rows, T, 4] (METRICS order); ``subset_mass``:
        [n_rows, T] (NaN without a subset).
    """
    import torch

    nL, R, T, d = states.shape
    N = R * T
    flat = states.reshape(nL, N, d)
    tgt = torch.as_tensor(np.asarray(targets).reshape(N), dtype=torch.long)
    tdt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    out = {"logit": np.zeros((nL, N, 4)), "tuned": np.zeros((nL, N, 4)), "subset_mass": np.full(N, np.nan)}
    sub = None if subset is None else torch.as_tensor(np.asarray(subset), dtype=torch.long)
    with torch.no_grad():
        for j in range(0, N, chunk):
            sl = slice(j, min(N, j + chunk))
            fl = readout.logits(torch.as_tensor(flat[final_index, sl]))
            flp = fl - torch.logsumexp(fl, dim=-1, keepdim=True)  # as token_metrics computes log q
            ftop = flp.argmax(-1)
            fp = flp.exp()
            if sub is not None:
                out["subset_mass"][sl] = fp[:, sub].sum(-1).double().numpy()
            for i in range(nL):
                h = torch.as_tensor(flat[i, sl])
                if i == final_index:
                    m = token_metrics(fl.clone(), fp, flp, ftop, tgt[sl])
                    out["logit"][i, sl] = m
                    out["tuned"][i, sl] = m
                    continue
                out["logit"][i, sl] = token_metrics(readout.logits(h, dtype=tdt), fp, flp, ftop, tgt[sl])
                if i in translators:
                    A, b = translators[i]
                    out["tuned"][i, sl] = token_metrics(readout.logits(translate(h, A, b), dtype=tdt), fp, flp,
                                                        ftop, tgt[sl])
                else:
                    out["tuned"][i, sl] = out["logit"][i, sl]
            if progress is not None and (j // chunk) % 8 == 7:
                progress(f"lens: evaluated {sl.stop}/{N} tokens")
    return {"logit": out["logit"].reshape(nL, R, T, 4), "tuned": out["tuned"].reshape(nL, R, T, 4),
            "subset_mass": out["subset_mass"].reshape(R, T)}


def block_bootstrap(per_token: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean and 95 % interval of ``per_token`` [n_blocks, T] by resampling whole blocks.

    Returns
    -------
    (mean, low, high)
    """
    x = np.asarray(per_token, dtype=np.float64)
    means = x.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(means), size=(n_boot, len(means)))
    boots = means[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(means.mean()), float(lo), float(hi)
