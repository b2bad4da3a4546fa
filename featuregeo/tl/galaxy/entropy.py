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
from featuregeo.tl.galaxy.records import ArrayEq, small_eigh
from featuregeo.tl.galaxy.spectrum import iter_rows

MIN_POINTS = 10


# ----------------------------------------------------------------------------------------------
# subsampling while streaming
# ----------------------------------------------------------------------------------------------
def mix64(z: np.ndarray) -> np.ndarray:
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
            keys = mix64(ids.astype(np.uint64) ^ self._salt[r])
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
    x32 = x.astype(np.float32)
    sq = np.einsum("ij,ij->i", x32, x32)
    if k == 1:
        return _nearest_distance(x, x32, sq, block)
    out = np.empty(n)
    for s in range(0, n, block):
        e = min(n, s + block)
        # candidates from a float32 GEMM (half the cost); their distances are recomputed exactly below.
        # The ranking of row i's neighbours needs |x_j|^2 - 2 x_i.x_j only (|x_i|^2 is the same for all j),
        # computed in place on the GEMM's output
        d2 = x32[s:e] @ x32.T
        d2 *= -2.0
        d2 += sq[None, :]
        d2[np.arange(e - s), np.arange(s, e)] = np.inf  # exclude self
        # the k nearest by the GEMM expansion, then their exact distances by direct differences
        # (the expansion loses precision for close points, and a duplicate must give exactly 0)
        cand = (np.argmin(d2, axis=1)[:, None] if k == 1 else np.argpartition(d2, k - 1, axis=1)[:, :k])
        diff = x[s:e, None, :] - x[cand]
        exact = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        out[s:e] = np.sort(exact, axis=1)[:, k - 1]
    return out


def _nearest_distance(x: np.ndarray, x32: np.ndarray, sq: np.ndarray, block: int) -> np.ndarray:
    """Distance to the nearest other row: each pair of row blocks once (the distance matrix is symmetric,
    so a block's row minima serve its rows and its column minima the other block's rows), then the
    exact distance to the candidate by direct differences."""
    n = x.shape[0]
    best = np.full(n, np.inf, dtype=np.float32)
    arg = np.zeros(n, dtype=np.int64)
    for s in range(0, n, block):
        e = min(n, s + block)
        for t in range(s, n, block):
            f = min(n, t + block)
            d2 = x32[s:e] @ x32[t:f].T
            d2 *= -2.0
            d2 += sq[s:e, None]
            d2 += sq[None, t:f]
            if t == s:
                d2[np.arange(e - s), np.arange(e - s)] = np.inf  # exclude self
            r = np.argmin(d2, axis=1)
            rv = d2[np.arange(e - s), r]
            better = rv < best[s:e]
            best[s:e][better], arg[s:e][better] = rv[better], r[better] + t
            if t != s:
                c = np.argmin(d2, axis=0)
                cv = d2[c, np.arange(f - t)]
                better = cv < best[t:f]
                best[t:f][better], arg[t:f][better] = cv[better], c[better] + s
    diff = x - x[arg]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


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


def orthonormal_columns(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column span of a tall ``y`` by the eigendecomposition of its small Gram
    (GEMMs only; LAPACK QR of a tall matrix is slow on a busy machine); near-null directions are dropped.

    Examples
    --------
    >>> q = orthonormal_columns(np.random.default_rng(0).standard_normal((50, 4)))
    >>> bool(np.allclose(q.T @ q, np.eye(4)))
    True
    """
    for _ in range(2):  # twice: the second pass repairs the round-off of the first
        w, v = small_eigh(y.T @ y)
        keep = w > w.max() * 1e-12
        y = (y @ v[:, keep]) / np.sqrt(w[keep])
    return y


def top_eigenvectors(apply, d: int, p: int, rng: np.random.Generator, iterations: int = 6) -> np.ndarray:
    """``d x p`` orthonormal basis close to the top eigenvectors of a symmetric PSD operator ``apply`` (randomized)."""
    q = orthonormal_columns(apply(rng.standard_normal((d, p + 20))))
    for _ in range(iterations):
        q = orthonormal_columns(apply(q))
    w, v = small_eigh(q.T @ apply(q))
    return q @ v[:, ::-1][:, :p]


def _top_right_vectors(y: np.ndarray, p: int, rng: np.random.Generator, iterations: int = 4) -> np.ndarray:
    """``d x p`` orthonormal basis close to the top right singular vectors of ``y`` (randomized, power iterations)."""
    return top_eigenvectors(lambda q: y.T @ (y @ q), y.shape[1], p, rng, iterations)


def _project_on_basis(y: np.ndarray, zscore: bool, basis: np.ndarray):
    """``principal_coordinates`` with a fixed ``basis``, without materialising the centred (z-scored) sample:
    ``((y - mean) / sd) @ B = y @ (B / sd) - (mean / sd) @ B`` (one GEMM and two column passes).
    None when a column has no spread (the general route drops it)."""
    m = y.shape[0]
    mean = y.mean(axis=0)
    if zscore:
        sd = y.std(axis=0, ddof=1)
        if not np.all(sd > 0):
            return None
        b = basis / sd[:, None]
    else:
        b = basis
    z = y @ b - mean @ b
    w, v = small_eigh((z.T @ z) / (m - 1))
    order = np.argsort(w)[::-1]
    ev_all, z = w[order], z @ v[:, order]
    tol = (ev_all[0] if ev_all.size else 0.0) * max(y.shape) * np.finfo(np.float64).eps
    p = min(int(np.sum(ev_all > tol)), m - 1, z.shape[1])
    if p < 1:
        raise InputError("data: the entropy subsample has no spread (all rows equal); expected varied rows")
    return z[:, :p], ev_all[:p]


def unique_rows(y: np.ndarray) -> np.ndarray:
    """The distinct rows of ``y`` in their first-seen order (exact byte equality after mapping -0.0 to 0.0).

    A hash of each row's bytes instead of ``np.unique(axis=0)``, which sorts the rows lexicographically
    (seconds for a 5,000 x 2,304 sample).

    Examples
    --------
    >>> unique_rows(np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [-0.0, 1.0]])).tolist()
    [[1.0, 2.0], [0.0, 1.0]]
    """
    y = np.ascontiguousarray(y) + 0.0  # -0.0 + 0.0 == 0.0: equal values get equal bytes
    seen: dict[bytes, int] = {}
    keep = [i for i in range(y.shape[0]) if seen.setdefault(y[i].tobytes(), i) == i]
    return y if len(keep) == y.shape[0] else y[keep]


def principal_coordinates(y: np.ndarray, zscore: bool, pca_dim: int | None,
                          rng: np.random.Generator | None = None,
                          basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre (and z-score) columns, project on the top principal axes above round-off.

    Returns ``(Z, eigenvalues)``: ``Z`` has ``min(pca_dim, d, m - 1, numerical rank)`` uncorrelated
    columns whose sample variances are ``eigenvalues`` (descending).  When ``pca_dim`` is well below
    both ``m`` and ``d`` and ``rng`` is given, the axes come from a randomized range finder (a few
    power iterations) instead of a full eigendecomposition; the coordinates are then rotated to be
    exactly uncorrelated, so every entropy below is computed on exactly the returned sample.
    With ``basis`` (``d x p``, e.g. the top axes of the whole cloud's correlation matrix) the sample is
    projected on it instead (then rotated to uncorrelated coordinates the same way).
    """
    y = np.asarray(y, dtype=np.float64)
    if basis is not None:
        fast = _project_on_basis(y, zscore, basis)
        if fast is not None:
            return fast[0][:, :min(fast[0].shape[1], pca_dim or fast[0].shape[1])], fast[1][:pca_dim]
    y = y - y.mean(axis=0)
    if zscore:
        sd = y.std(axis=0, ddof=1)
        keep = sd > 0
        y = y[:, keep] / sd[keep]
    m, d = y.shape
    if basis is not None and (not zscore or bool(np.all(keep))):
        z = y @ basis
        w, v = small_eigh((z.T @ z) / (m - 1))
        order = np.argsort(w)[::-1]
        ev_all, z = w[order], z @ v[:, order]
        coords = lambda p: z[:, :p]  # noqa: E731
    elif rng is not None and pca_dim is not None and 4 * (int(pca_dim) + 20) < min(m, d):
        z = y @ _top_right_vectors(y, int(pca_dim), rng)
        w, v = small_eigh((z.T @ z) / (m - 1))
        order = np.argsort(w)[::-1]
        ev_all, z = w[order], z @ v[:, order]
        coords = lambda p: z[:, :p]  # noqa: E731
    elif m - 1 < d:  # Gram route: cheaper when there are fewer points than dimensions
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


#: the entropy's nulls, in the order they are stored
NULLS = ("gaussian", "radial", "marginals")


def match_covariance(x: np.ndarray, ev: np.ndarray) -> np.ndarray:
    """``x`` in its own principal coordinates, each rescaled so the sample covariance is exactly ``diag(ev)``.

    The k-th principal axis of ``x`` gets the k-th variance of ``ev`` (descending), as the data's own
    principal coordinates do: a heavy-tailed sample's extreme points define its leading axes, in the
    data and in the null alike.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((200, 3))
    >>> bool(np.allclose(np.cov(match_covariance(x, np.array([3.0, 2.0, 1.0])), rowvar=False), np.diag([3.0, 2.0, 1.0])))
    True
    """
    x = x - x.mean(axis=0)
    w, v = small_eigh((x.T @ x) / (x.shape[0] - 1))
    w, v = np.maximum(w[::-1], np.finfo(np.float64).tiny), v[:, ::-1]
    return (x @ v) / np.sqrt(w) * np.sqrt(ev)


def null_sample(kind: str, z: np.ndarray, ev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An unclustered sample matched to principal coordinates ``z`` (variances ``ev``).

    * ``"gaussian"`` — a Gaussian with the same covariance spectrum (the estimator's own bias);
    * ``"radial"`` — the same spectrum with the cloud's own Mahalanobis radii: each point keeps its
      whitened norm on a uniformly random direction (an elliptical cloud: heavy tails kept, clusters gone);
    * ``"marginals"`` — every principal coordinate keeps its own marginal, the dependence between them
      is destroyed by permuting each column independently.

    Examples
    --------
    >>> z = np.random.default_rng(0).standard_normal((500, 3)) * [3.0, 2.0, 1.0]
    >>> ev = z.var(axis=0, ddof=1)
    >>> r = null_sample("radial", z, ev, np.random.default_rng(1))
    >>> np.round(np.cov(r, rowvar=False).diagonal() / ev, 6).tolist()
    [1.0, 1.0, 1.0]
    """
    if kind == "gaussian":
        return match_covariance(rng.standard_normal(z.shape), ev)
    if kind == "radial":
        scale = np.sqrt(ev)
        m = z.shape[0]
        # leave-one-out Mahalanobis radii: a point's own weight in the covariance shrinks its radius
        h = np.minimum(np.sum((z / scale) ** 2, axis=1) / (m - 1), 1 - 1e-9)
        radius = np.sqrt((m - 2) * h / (1 - h))
        u = rng.standard_normal(z.shape)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        return match_covariance(u * radius[:, None] * scale, ev)
    if kind == "marginals":
        return match_covariance(np.stack([rng.permutation(z[:, j]) for j in range(z.shape[1])], axis=1), ev)
    raise InputError(f"null: expected one of {list(NULLS)}. Got {kind!r} instead.")


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
class EntropyNull(ArrayEq, Result):
    """One null of the clustering entropy: the same statistic (gaussian - knn, nats) on a matched unclustered sample."""

    kind = "entropy_null"
    name: str = ""
    difference: float = float("nan")
    ci: tuple[float, float] | None = None
    per_repeat: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(eq=False)
class EntropyEstimate(ArrayEq, Result):
    """Gaussian entropy, k-NN entropy and their difference (nats), with subsample percentile intervals.

    ``difference`` = gaussian - knn: how much less entropy the cloud has than a Gaussian of the
    same covariance.  That measures non-Gaussianity of any kind (heavy tails too), not only
    clustering.  ``nulls`` holds the same statistic on three matched *unclustered* samples (see
    :func:`null_sample`): a same-spectrum Gaussian (``null_difference``, the estimator's own bias),
    the cloud's own radii on uniform directions, and the cloud's own principal-coordinate marginals
    with their dependence destroyed.  ``excess`` = difference minus the *strongest* null (the one
    with the largest difference, named in ``strongest_null``) is the clustering no unclustered
    cloud explains; ``excess_gaussian`` is the old excess over the Gaussian only.
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
    nulls: list[EntropyNull] = field(default_factory=list)
    strongest_null: str | None = None
    excess_gaussian: float | None = None
    excess_gaussian_ci: tuple[float, float] | None = None


def _interval(v: np.ndarray, confidence: float) -> tuple[float, float] | None:
    if len(v) < 2:
        return None
    lo, hi = np.percentile(v, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


def entropy_from_sampler(sampler: RowSampler, *, subsample: int, pca_dim: int | None = 100, zscore: bool = True,
                         k: int = 1, null: bool = True, confidence: float = 0.95,
                         seed: int | np.random.Generator | None = 0, name: str = "data",
                         basis: np.ndarray | None = None) -> EntropyEstimate:
    """The clustering entropy of the samples a :class:`RowSampler` drew (see :func:`clustering_entropy`).

    ``basis`` (``d x pca_dim``): project every subsample on these axes (computed once from the whole
    cloud) instead of a PCA per subsample.
    """
    rng = resolve_rng(seed)
    pc_rng = np.random.default_rng(rng.integers(2**63))
    n = sampler.n_seen
    if n < MIN_POINTS:
        raise InputError(f"{name}: clustering entropy needs at least {MIN_POINTS} points. Got {n} instead.")
    m = subsample_size(n, min(subsample, sampler.size), sampler.repeats)
    vals: dict[str, list[float]] = {key: [] for key in ("gaussian", "knn", "difference", "duplicates_dropped")
                                    + tuple(f"null_{kind}" for kind in NULLS)}
    p_used = []
    for r in range(sampler.repeats):
        y = sampler.sample(r, m)
        y_unique = unique_rows(y)
        vals["duplicates_dropped"].append(y.shape[0] - y_unique.shape[0])
        if y_unique.shape[0] < max(MIN_POINTS, k + 2):
            raise InputError(f"{name}: an entropy subsample of {m} rows holds only {y_unique.shape[0]} distinct rows; "
                             f"expected at least {max(MIN_POINTS, k + 2)} (skip the entropy with entropy=False / "
                             "--no-entropy)")
        z, ev = principal_coordinates(y_unique, zscore, pca_dim, pc_rng, basis=basis)
        p_used.append(z.shape[1])
        hg, hk = gaussian_entropy(ev), knn_entropy(z, k)
        vals["gaussian"].append(hg)
        vals["knn"].append(hk)
        vals["difference"].append(hg - hk)
        if null:
            for kind in NULLS:
                zn, evn = principal_coordinates(null_sample(kind, z, ev, rng), False, None)
                vals[f"null_{kind}"].append(gaussian_entropy(evn) - knn_entropy(zn, k))
    diff = np.array(vals["difference"])
    nulls = [EntropyNull(name=kind, difference=float(np.mean(vals[f"null_{kind}"])),
                         ci=_interval(np.array(vals[f"null_{kind}"]), confidence),
                         per_repeat=np.array(vals[f"null_{kind}"])) for kind in NULLS] if null else []
    nd = nulls[0].per_repeat if null else None
    strongest = max(nulls, key=lambda e: e.difference) if null else None
    exc = diff - strongest.per_repeat if null else None
    return EntropyEstimate(
        gaussian=float(np.mean(vals["gaussian"])), knn=float(np.mean(vals["knn"])),
        difference=float(diff.mean()), ci=_interval(diff, confidence),
        null_difference=None if nd is None else float(nd.mean()),
        null_ci=None if nd is None else _interval(nd, confidence),
        excess=None if exc is None else float(exc.mean()),
        excess_ci=None if exc is None else _interval(exc, confidence),
        nulls=nulls, strongest_null=None if strongest is None else strongest.name,
        excess_gaussian=None if nd is None else float((diff - nd).mean()),
        excess_gaussian_ci=None if nd is None else _interval(diff - nd, confidence),
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
    repeats: int = 20,
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


__all__ = ["RowSampler", "subsample_size", "mix64", "NULLS", "null_sample", "match_covariance",
           "orthonormal_columns", "top_eigenvectors", "unique_rows", "EntropyNull", "gaussian_entropy", "knn_entropy", "kth_nn_distance",
           "log_unit_ball_volume", "principal_coordinates", "EntropyEstimate", "EntropyRepeats",
           "entropy_from_sampler", "clustering_entropy"]
