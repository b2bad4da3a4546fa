"""Clustering entropy: Gaussian entropy minus a Kozachenko-Leonenko k-NN entropy, with a null.

The subsamples are drawn while the rows stream past (:class:`RowSampler`, a seeded bottom-k
sample per repeat), so a 1M-row decoder on disk is never materialised for this step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, special

from featuregeo.core.data import DEFAULT_CHUNK_ROWS, FeatureCloud
from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.core.util import resolve_rng
from featuregeo.tl.galaxy.records import ArrayEq
from featuregeo.tl.galaxy.spectrum import iter_rows

MIN_POINTS = 10


# ----------------------------------------------------------------------------------------------
# subsampling while streaming
# ----------------------------------------------------------------------------------------------
def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective hash of uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class RowSampler:
    """Uniform samples without replacement of rows fed chunk by chunk, one per repeat.

    Every row gets a pseudo-random key per repeat (a hash of its row id and a seeded salt); a
    repeat's sample is the ``size`` rows with the smallest keys (a bottom-k sketch).  The samples do
    not depend on the chunking, need no row count in advance, and hold at most ``repeats * size``
    rows (fewer when the repeats overlap).

    Parameters
    ----------
    size : int
        Rows kept per repeat (the largest subsample that will be asked for).
    repeats : int
        Number of independent samples.
    seed : int or Generator
        Draws the salts.

    Examples
    --------
    >>> s = RowSampler(5, 2, seed=0)
    >>> x = np.arange(40.0).reshape(20, 2)
    >>> s.add(np.arange(20), x)
    >>> s.sample(0, 5).shape, s.n_seen
    ((5, 2), 20)
    """

    def __init__(self, size: int, repeats: int, seed: int | np.random.Generator = 0):
        rng = resolve_rng(seed)
        self.size, self.repeats = int(size), int(repeats)
        self._salt = rng.integers(0, 2**63, size=self.repeats, dtype=np.int64).astype(np.uint64)
        self._keys = [np.zeros(0, dtype=np.uint64) for _ in range(self.repeats)]
        self._ids = [np.zeros(0, dtype=np.int64) for _ in range(self.repeats)]
        self._rows: dict[int, np.ndarray] = {}
        self._union = np.zeros(0, dtype=np.int64)
        self.n_seen = 0

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Offer a chunk: ``ids`` (unique int row ids) and the matching ``rows``."""
        ids = np.asarray(ids, dtype=np.int64)
        self.n_seen += ids.size
        if ids.size == 0:
            return
        pos_of = None
        for r in range(self.repeats):
            keys = _mix64(ids.astype(np.uint64) ^ self._salt[r])
            if self._keys[r].size >= self.size:
                cand = np.flatnonzero(keys < self._keys[r].max())
                if cand.size == 0:
                    continue
            else:
                cand = np.arange(ids.size)
            all_keys = np.concatenate([self._keys[r], keys[cand]])
            all_ids = np.concatenate([self._ids[r], ids[cand]])
            if all_keys.size > self.size:
                keep = np.argpartition(all_keys, self.size - 1)[:self.size]
                all_keys, all_ids = all_keys[keep], all_ids[keep]
            self._keys[r], self._ids[r] = all_keys, all_ids
            new = np.setdiff1d(all_ids, self._union, assume_unique=True)
            if new.size:
                if pos_of is None:
                    pos_of = {int(i): j for j, i in enumerate(ids)}
                for i in new.tolist():
                    if i not in self._rows:
                        self._rows[i] = np.array(rows[pos_of[i]], dtype=np.float32)
        union = np.unique(np.concatenate(self._ids))
        for i in np.setdiff1d(self._union, union, assume_unique=True).tolist():
            self._rows.pop(i, None)
        self._union = union

    def sample(self, repeat: int, m: int) -> np.ndarray:
        """The ``m`` rows (``m <= size``) of sample ``repeat`` with the smallest keys, in row-id order, float64."""
        order = np.argsort(self._keys[repeat], kind="stable")[:m]
        ids = np.sort(self._ids[repeat][order])
        return np.stack([self._rows[int(i)] for i in ids]).astype(np.float64)

    @property
    def n_held(self) -> int:
        """Distinct rows currently held."""
        return len(self._rows)


def subsample_size(n: int, subsample: int, repeats: int) -> int:
    """Rows per repeat: ``subsample``, at most 80% of ``n`` when repeating (so repeats differ)."""
    return int(min(subsample, n if repeats == 1 else int(0.8 * n)))


# ----------------------------------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------------------------------
def gaussian_entropy(eigenvalues: np.ndarray) -> float:
    """Differential entropy (nats) of a Gaussian with covariance eigenvalues ``eigenvalues``.

    Examples
    --------
    >>> round(gaussian_entropy(np.ones(2)), 6) == round(math.log(2 * math.pi * math.e), 6)
    True
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    if np.any(ev <= 0):
        raise InputError("eigenvalues: the Gaussian entropy needs a positive-definite covariance; "
                         "expected all eigenvalues > 0 (reduce entropy_pca_dim)")
    p = ev.size
    return float(0.5 * p * math.log(2 * math.pi * math.e) + 0.5 * np.sum(np.log(ev)))


def log_unit_ball_volume(p: int) -> float:
    """``log`` of the volume of the unit ball in ``p`` dimensions."""
    return 0.5 * p * math.log(math.pi) - special.gammaln(0.5 * p + 1)


def kth_nn_distance(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Euclidean distance from every row to its k-th nearest other row (exact, blocked GEMM)."""
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(n)
    for s in range(0, n, block):
        e = min(n, s + block)
        d2 = sq[s:e, None] + sq[None, :] - 2.0 * (x[s:e] @ x.T)
        d2[np.arange(e - s), np.arange(s, e)] = np.inf  # exclude self
        # the k nearest by the GEMM expansion, then their exact distances by direct differences
        # (the expansion loses precision for close points, and a duplicate must give exactly 0)
        cand = np.argpartition(d2, k - 1, axis=1)[:, :k]
        diff = x[s:e, None, :] - x[cand]
        exact = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        out[s:e] = np.sort(exact, axis=1)[:, k - 1]
    return out


def knn_entropy(x: np.ndarray, k: int = 1) -> float:
    """Kozachenko-Leonenko estimate of differential entropy (nats) of the rows of ``x``.

    ``H = psi(n) - psi(k) + log V_p + (p / n) * sum_i log r_i`` where ``r_i`` is the Euclidean
    distance from point i to its k-th nearest neighbour and ``V_p = pi^(p/2) / Gamma(p/2 + 1)``
    is the volume of the unit p-ball.  Rows must be distinct (a zero distance has no log).

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((4000, 2))
    >>> abs(knn_entropy(x) - gaussian_entropy(np.ones(2))) < 0.1
    True
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if not 1 <= k < n:
        raise InputError(f"k: expected 1 <= k < number of points ({n}). Got {k} instead.")
    r = kth_nn_distance(x, k)
    if np.any(r <= 0):
        raise InputError(f"data: {int(np.sum(r <= 0))} points have a duplicate at distance 0; "
                         "expected distinct points (remove duplicates first)")
    return float(special.digamma(n) - special.digamma(k) + log_unit_ball_volume(p) + p * np.mean(np.log(r)))


def principal_coordinates(y: np.ndarray, zscore: bool, pca_dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre (and z-score) columns, project on the top principal axes above round-off.

    Returns ``(Z, eigenvalues)``: ``Z`` has ``min(pca_dim, d, m - 1, numerical rank)`` columns.
    """
    y = np.asarray(y, dtype=np.float64)
    y = y - y.mean(axis=0)
    if zscore:
        sd = y.std(axis=0, ddof=1)
        keep = sd > 0
        y = y[:, keep] / sd[keep]
    m, d = y.shape
    if m - 1 < d:  # Gram route: cheaper when there are fewer points than dimensions
        u, s, _ = linalg.svd(y, full_matrices=False, check_finite=False)
        ev_all = s ** 2 / (m - 1)
        coords = lambda p: u[:, :p] * s[:p]  # noqa: E731
    else:
        w, v = linalg.eigh((y.T @ y) / (m - 1), check_finite=False, driver="evd")
        order = np.argsort(w)[::-1]
        ev_all, v = w[order], v[:, order]
        coords = lambda p: y @ v[:, :p]  # noqa: E731
    tol = (ev_all[0] if ev_all.size else 0.0) * max(m, d) * np.finfo(np.float64).eps
    rank = int(np.sum(ev_all > tol))
    p = min(d if pca_dim is None else int(pca_dim), d, m - 1, rank)
    if p < 1:
        raise InputError("data: the entropy subsample has no spread (all rows equal); expected varied rows")
    return coords(p), ev_all[:p]


# ----------------------------------------------------------------------------------------------
# the estimate
# ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class EntropyRepeats(ArrayEq, Result):
    """Per-repeat values (nats) behind an :class:`EntropyEstimate`."""

    kind = "entropy_repeats"
    gaussian: np.ndarray = field(default_factory=lambda: np.zeros(0))
    knn: np.ndarray = field(default_factory=lambda: np.zeros(0))
    difference: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_difference: np.ndarray | None = None
    duplicates_dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(eq=False)
class EntropyEstimate(ArrayEq, Result):
    """Gaussian entropy, k-NN entropy and their difference (nats), with subsample percentile intervals.

    ``difference`` = gaussian - knn: how much less entropy the cloud has than a Gaussian of the
    same covariance (clustering).  ``null_difference`` is the same statistic on Gaussian samples
    with the same covariance spectrum through the same code (the estimator's own bias);
    ``excess`` = difference - null_difference is the clustering the estimator cannot explain.
    Intervals are percentile intervals over repeats (None with one repeat).
    """

    kind = "entropy"
    gaussian: float = float("nan")
    knn: float = float("nan")
    difference: float = float("nan")
    ci: tuple[float, float] | None = None
    null_difference: float | None = None
    null_ci: tuple[float, float] | None = None
    excess: float | None = None
    excess_ci: tuple[float, float] | None = None
    subsample: int = 0
    pca_dim: int = 0
    zscore: bool = True
    k: int = 1
    repeats: int = 0
    confidence: float = 0.95
    replacement: bool = False
    units: str = "nats"
    per_repeat: EntropyRepeats = field(default_factory=EntropyRepeats)


def _interval(v: np.ndarray, confidence: float) -> tuple[float, float] | None:
    if len(v) < 2:
        return None
    lo, hi = np.percentile(v, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def entropy_from_sampler(sampler: RowSampler, *, subsample: int, pca_dim: int | None = 100, zscore: bool = True,
                         k: int = 1, null: bool = True, confidence: float = 0.95,
                         seed: int | np.random.Generator | None = 0, name: str = "data") -> EntropyEstimate:
    """The clustering entropy of the samples a :class:`RowSampler` drew (see :func:`clustering_entropy`)."""
    rng = resolve_rng(seed)
    n = sampler.n_seen
    if n < MIN_POINTS:
        raise InputError(f"{name}: clustering entropy needs at least {MIN_POINTS} points. Got {n} instead.")
    m = subsample_size(n, min(subsample, sampler.size), sampler.repeats)
    vals: dict[str, list[float]] = {key: [] for key in ("gaussian", "knn", "difference", "null_difference",
                                                        "duplicates_dropped")}
    p_used = []
    for r in range(sampler.repeats):
        y = sampler.sample(r, m)
        y_unique = np.unique(y, axis=0)
        vals["duplicates_dropped"].append(y.shape[0] - y_unique.shape[0])
        if y_unique.shape[0] < max(MIN_POINTS, k + 2):
            raise InputError(f"{name}: an entropy subsample of {m} rows holds only {y_unique.shape[0]} distinct rows; "
                             f"expected at least {max(MIN_POINTS, k + 2)} (skip the entropy with entropy=False / "
                             "--no-entropy)")
        z, ev = principal_coordinates(y_unique, zscore, pca_dim)
        p_used.append(z.shape[1])
        hg, hk = gaussian_entropy(ev), knn_entropy(z, k)
        vals["gaussian"].append(hg)
        vals["knn"].append(hk)
        vals["difference"].append(hg - hk)
        if null:
            g = rng.standard_normal(z.shape) * np.sqrt(ev)
            zg, evg = principal_coordinates(g, False, None)
            vals["null_difference"].append(gaussian_entropy(evg) - knn_entropy(zg, k))
    diff = np.array(vals["difference"])
    nd = np.array(vals["null_difference"]) if null else None
    exc = diff - nd if null else None
    return EntropyEstimate(
        gaussian=float(np.mean(vals["gaussian"])), knn=float(np.mean(vals["knn"])),
        difference=float(diff.mean()), ci=_interval(diff, confidence),
        null_difference=None if nd is None else float(nd.mean()),
        null_ci=None if nd is None else _interval(nd, confidence),
        excess=None if exc is None else float(exc.mean()),
        excess_ci=None if exc is None else _interval(exc, confidence),
        subsample=m, pca_dim=int(min(p_used)), zscore=bool(zscore), k=int(k), repeats=sampler.repeats,
        confidence=float(confidence),
        per_repeat=EntropyRepeats(gaussian=np.array(vals["gaussian"]), knn=np.array(vals["knn"]), difference=diff,
                                  null_difference=nd,
                                  duplicates_dropped=np.array(vals["duplicates_dropped"], dtype=np.int64)),
    )


def clustering_entropy(
    x: np.ndarray | FeatureCloud,
    *,
    subsample: int = 5000,
    pca_dim: int | None = 100,
    zscore: bool = True,
    k: int = 1,
    repeats: int = 10,
    null: bool = True,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> EntropyEstimate:
    """Clustering entropy of a point cloud: Gaussian entropy minus k-NN entropy.

    Each repeat draws ``subsample`` distinct rows *without replacement* (at most 80% of the rows,
    so repeats differ) while the rows stream past, drops exact duplicate rows, optionally z-scores
    and projects on the top ``pca_dim`` principal axes, then computes the Gaussian entropy from the
    covariance eigenvalues of the projected sample and the Kozachenko-Leonenko estimate.  The
    null draws a Gaussian sample of the same size with those eigenvalues and runs the same two
    estimators.

    Parameters
    ----------
    x : ndarray of shape (n, d) or FeatureCloud
        A cloud is streamed (never materialised).
    subsample, pca_dim, zscore, k, repeats, null, confidence, seed
        See :class:`~featuregeo.tl.galaxy.GalaxyParams` (``entropy_*``).

    Returns
    -------
    EntropyEstimate

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((400, 5))
    >>> e = clustering_entropy(x, subsample=200, pca_dim=None, repeats=2)
    >>> e.subsample, e.replacement, abs(e.excess) < 1
    (200, False, True)
    """
    if repeats < 1 or subsample < 1 or k < 1:
        raise InputError(f"repeats, subsample, k: expected integers >= 1. Got {repeats}, {subsample}, {k} instead.")
    rng = resolve_rng(seed)
    sampler = RowSampler(subsample, repeats, rng)
    for ids, chunk in iter_rows(x, chunk_rows):
        sampler.add(ids, chunk)
    return entropy_from_sampler(sampler, subsample=subsample, pca_dim=pca_dim, zscore=zscore, k=k, null=null,
                                confidence=confidence, seed=rng)


__all__ = ["RowSampler", "subsample_size", "gaussian_entropy", "knn_entropy", "kth_nn_distance",
           "log_unit_ball_volume", "principal_coordinates", "EntropyEstimate", "EntropyRepeats",
           "entropy_from_sampler", "clustering_entropy"]
