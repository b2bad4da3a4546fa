"""Galaxy scale: the shape of the feature point cloud.

* :func:`covariance` — streamed covariance (or second moment) of the rows of a cloud, one chunk at
  a time with a BLAS ``syrk``-style product per chunk, so a 1M x 2304 decoder stored on disk never
  sits in memory.
* :func:`eigenspectrum` — the eigenvalues of that matrix, sorted descending.
* :func:`fit_power_law` — least squares of log10(eigenvalue) on log10(rank) over a rank window,
  with a 95% t-interval on the slope and R^2; :func:`window_sensitivity` repeats it over windows.
* :func:`clustering_entropy` — Gaussian entropy minus a Kozachenko-Leonenko k-NN entropy estimate
  on subsamples drawn *without* replacement, with a matched-Gaussian null through the same code.
* :func:`analyze_layer` — all of the above for one cloud, including the isotropic-Gaussian null of
  the same shape computed by the same code; :func:`run_galaxy` does a suite with resume.

References
----------
Li et al., "The Geometry of Concepts: Sparse Autoencoder Feature Structure", Entropy 27(4):344 (2025).
Kozachenko & Leonenko, "Sample estimate of the entropy of a random vector", Probl. Inf. Transm. 23 (1987).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import linalg, special, stats

from featuregeo.core.util import atomic_write_bytes, atomic_write_json, atomic_write_text, resolve_rng, to_jsonable
from featuregeo.core.data import FeatureCloud
from featuregeo.core.errors import InputError
from featuregeo.core.results import LegacyResult as Result, register

DEFAULT_FIT_RANKS = (11, 150)
DEFAULT_WINDOWS = ((2, 50), (11, 100), (11, 150), (11, 300), (51, 300), (101, 500))


# ----------------------------------------------------------------------------------------------
# covariance and spectrum
# ----------------------------------------------------------------------------------------------
def _as_chunks(data: FeatureCloud | np.ndarray, chunk_rows: int):
    if isinstance(data, FeatureCloud):
        for _, chunk in data.iter_chunks(chunk_rows):
            yield chunk
    else:
        a = np.asarray(data)
        if a.ndim != 2:
            raise InputError(f"data: expected a 2-D array [n_points, d]. Got shape {a.shape} instead.")
        for s in range(0, a.shape[0], chunk_rows):
            yield a[s:s + chunk_rows]


def covariance(
    data: FeatureCloud | np.ndarray,
    *,
    center: bool = True,
    normalize: bool = False,
    chunk_rows: int = 8192,
) -> tuple[np.ndarray, int]:
    """Covariance of the rows (``np.cov`` convention, ddof=1), streamed chunk by chunk.

    Parameters
    ----------
    data : FeatureCloud or ndarray of shape (n, d)
    center : bool, default=True
        Subtract the mean (covariance).  ``False`` gives the uncentered second moment ``X^T X / n``.
    normalize : bool, default=False
        Scale every row to unit norm first (zero rows are left at zero).
    chunk_rows : int, default=8192
        Rows per chunk; peak extra memory is one float32 chunk plus two d x d float64 matrices.

    Returns
    -------
    cov : ndarray of shape (d, d), float64
    n : int
        Number of rows used.

    Notes
    -----
    Rows are shifted by the mean of the first chunk before accumulation, which keeps the
    float32 products well conditioned when the mean is large compared with the spread.
    """
    shift = None
    s1 = s2 = None
    n = 0
    for chunk in _as_chunks(data, chunk_rows):
        if chunk.shape[0] == 0:
            continue
        c = np.asarray(chunk, dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(c, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            c = c / norms
        if s2 is None:
            d = c.shape[1]
            s1 = np.zeros(d, dtype=np.float64)
            s2 = np.zeros((d, d), dtype=np.float64)
            shift = c.mean(axis=0, dtype=np.float64).astype(np.float32) if center else None
        if shift is not None:
            c = c - shift  # new array (never modifies the caller's rows)
        s1 += c.sum(axis=0, dtype=np.float64)
        s2 += c.T @ c  # numpy dispatches A.T @ A to syrk
        n += c.shape[0]
    if s2 is None or n == 0:
        raise InputError("data: no rows to compute a covariance from; expected at least 2 rows")
    if center:
        if n < 2:
            raise InputError(f"data: a covariance needs at least 2 rows. Got {n} instead.")
        m = s1 / n
        cov = (s2 - n * np.outer(m, m)) / (n - 1)
    else:
        cov = s2 / n
    cov = (cov + cov.T) * 0.5
    return cov, n


def eigenspectrum(cov: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, descending, tiny negative round-off clipped to 0."""
    w = linalg.eigh(cov, eigvals_only=True, check_finite=False, driver="evd")
    w = w[::-1].copy()
    w[w < 0] = 0.0
    return w


# ----------------------------------------------------------------------------------------------
# power law
# ----------------------------------------------------------------------------------------------
@register
@dataclass
class PowerLawFit(Result):
    """Least-squares line log10(eigenvalue) = intercept + slope * log10(rank) over ranks [a, b]."""

    kind = "power_law_fit"
    slope: float = float("nan")
    intercept: float = float("nan")
    slope_ci: list = field(default_factory=lambda: [float("nan"), float("nan")])
    stderr: float = float("nan")
    r2: float = float("nan")
    fit_ranks: list = field(default_factory=lambda: list(DEFAULT_FIT_RANKS))
    n_points: int = 0


def fit_power_law(eigenvalues: np.ndarray, fit_ranks: Sequence[int] = DEFAULT_FIT_RANKS,
                  confidence: float = 0.95) -> PowerLawFit:
    """Fit a power law to a descending spectrum over 1-based ranks ``fit_ranks = (a, b)`` inclusive.

    The window is clipped to the ranks with positive eigenvalues.  The slope's interval is the
    two-sided t-interval of the regression (df = points - 2).
    """
    a, b = int(fit_ranks[0]), int(fit_ranks[1])
    if a < 1 or b <= a:
        raise InputError(f"fit_ranks: expected two ranks 1 <= a < b. Got {tuple(fit_ranks)} instead.")
    ev = np.asarray(eigenvalues, dtype=np.float64)
    positive = int(np.sum(ev > 0))
    b_eff = min(b, positive)
    if b_eff - a + 1 < 3:
        raise InputError(
            f"fit_ranks: window {a}..{b} leaves {max(0, b_eff - a + 1)} positive eigenvalues of {ev.size}; "
            "expected at least 3 (choose a window inside the spectrum)"
        )
    ranks = np.arange(a, b_eff + 1, dtype=np.float64)
    x = np.log10(ranks)
    y = np.log10(ev[a - 1:b_eff])
    res = stats.linregress(x, y)
    npts = x.size
    t = stats.t.ppf(0.5 + confidence / 2, npts - 2)
    return PowerLawFit(
        slope=float(res.slope), intercept=float(res.intercept),
        slope_ci=[float(res.slope - t * res.stderr), float(res.slope + t * res.stderr)],
        stderr=float(res.stderr), r2=float(res.rvalue ** 2), fit_ranks=[a, b_eff], n_points=int(npts),
    )


def window_sensitivity(eigenvalues: np.ndarray, windows: Iterable[Sequence[int]] = DEFAULT_WINDOWS) -> list[dict]:
    """Slopes over several rank windows (windows that do not fit the spectrum are skipped)."""
    out = []
    n_pos = int(np.sum(np.asarray(eigenvalues) > 0))
    for a, b in windows:
        if min(b, n_pos) - a + 1 < 3:
            continue
        f = fit_power_law(eigenvalues, (a, b))
        out.append({"fit_ranks": f.fit_ranks, "slope": f.slope, "slope_ci": f.slope_ci, "r2": f.r2})
    return out


# ----------------------------------------------------------------------------------------------
# nulls
# ----------------------------------------------------------------------------------------------
class GaussianRows:
    """A :class:`RowReader` of i.i.d. N(0, 1) float32 rows, generated on demand from a seed.

    Rows are produced in fixed blocks, each from its own child seed, so any range reads the
    same values whatever the chunking, and the full matrix never has to exist.
    """

    block = 4096

    def __init__(self, n: int, d: int, seed: int = 0, scales: np.ndarray | None = None):
        self.shape = (int(n), int(d))
        self.dtype = np.dtype(np.float32)
        self._seed = int(seed)
        self._scales = None if scales is None else np.asarray(scales, dtype=np.float32)

    def _block(self, i: int) -> np.ndarray:
        rows = min(self.block, self.shape[0] - i * self.block)
        rng = np.random.default_rng([self._seed, i])
        x = rng.standard_normal((rows, self.shape[1]), dtype=np.float32)
        if self._scales is not None:
            x *= self._scales
        return x

    def read(self, start: int, stop: int) -> np.ndarray:
        b0, b1 = start // self.block, (stop - 1) // self.block
        parts = [self._block(i) for i in range(b0, b1 + 1)]
        x = np.concatenate(parts) if len(parts) > 1 else parts[0]
        off = start - b0 * self.block
        return x[off:off + (stop - start)]


def isotropic_null_cloud(n: int, d: int, seed: int = 0) -> FeatureCloud:
    """An isotropic Gaussian cloud of shape (n, d), streamed (never materialised)."""
    from featuregeo.core.data import Provenance

    return FeatureCloud(GaussianRows(n, d, seed), None, Provenance(source=f"isotropic-gaussian(n={n},d={d},seed={seed})"))


# ----------------------------------------------------------------------------------------------
# clustering entropy
# ----------------------------------------------------------------------------------------------
def gaussian_entropy(eigenvalues: np.ndarray) -> float:
    """Differential entropy (nats) of a Gaussian with covariance eigenvalues ``eigenvalues``."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    if np.any(ev <= 0):
        raise InputError("eigenvalues: the Gaussian entropy needs a positive-definite covariance; "
                         "expected all eigenvalues > 0 (reduce pca_dim)")
    p = ev.size
    return float(0.5 * p * math.log(2 * math.pi * math.e) + 0.5 * np.sum(np.log(ev)))


def _log_unit_ball_volume(p: int) -> float:
    return 0.5 * p * math.log(math.pi) - special.gammaln(0.5 * p + 1)


def _kth_nn_distance(x: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
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
    """
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if not 1 <= k < n:
        raise InputError(f"k: expected 1 <= k < number of points ({n}). Got {k} instead.")
    r = _kth_nn_distance(x, k)
    if np.any(r <= 0):
        raise InputError(f"data: {int(np.sum(r <= 0))} points have a duplicate at distance 0; "
                         "expected distinct points (remove duplicates first)")
    return float(special.digamma(n) - special.digamma(k) + _log_unit_ball_volume(p) + p * np.mean(np.log(r)))


def _prepare(y: np.ndarray, zscore: bool, pca_dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """z-score columns and project on the top ``pca_dim`` principal axes; returns (Z, eigenvalues)."""
    y = np.asarray(y, dtype=np.float64)
    y = y - y.mean(axis=0)
    if zscore:
        sd = y.std(axis=0, ddof=1)
        keep = sd > 0
        y = y[:, keep] / sd[keep]
    m, d = y.shape
    p = d if pca_dim is None else min(int(pca_dim), d, m - 1)
    if m - 1 < d:
        # Gram-matrix route: cheaper when there are fewer points than dimensions
        u, s, _ = linalg.svd(y, full_matrices=False, check_finite=False)
        z = u[:, :p] * s[:p]
        ev = s[:p] ** 2 / (m - 1)
    else:
        cov = (y.T @ y) / (m - 1)
        w, v = linalg.eigh(cov, check_finite=False, driver="evd")
        order = np.argsort(w)[::-1][:p]
        z = y @ v[:, order]
        ev = w[order]
    return z, ev


@register
@dataclass
class EntropyResult(Result):
    """Gaussian entropy, k-NN entropy and their difference (nats), with subsample percentiles.

    ``difference`` = gaussian - knn: how much less entropy the cloud has than a Gaussian of the same
    covariance (clustering).  ``null_difference`` is the same statistic on Gaussian samples with the
    same covariance spectrum through the same code (the estimator's own bias); ``excess`` =
    difference - null_difference is the clustering the estimator cannot explain.
    """

    kind = "entropy"
    gaussian: float = float("nan")
    knn: float = float("nan")
    difference: float = float("nan")
    ci: list = field(default_factory=list)
    null_difference: float = float("nan")
    null_ci: list = field(default_factory=list)
    excess: float = float("nan")
    excess_ci: list = field(default_factory=list)
    per_repeat: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


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
) -> EntropyResult:
    """Clustering entropy of a point cloud: Gaussian entropy minus k-NN entropy.

    Each repeat draws ``subsample`` distinct rows *without replacement* (at most 80% of the rows,
    so repeats differ), drops exact duplicate rows, optionally z-scores and projects on the top
    ``pca_dim`` principal axes, then computes the Gaussian entropy from the covariance
    eigenvalues of the projected sample and the Kozachenko-Leonenko estimate.  The null draws a
    Gaussian sample of the same size with those eigenvalues and runs the same two estimators.

    Returns an :class:`EntropyResult` with means over repeats and percentile intervals.
    """
    rng = resolve_rng(seed)
    X = x.vectors if isinstance(x, FeatureCloud) else np.asarray(x)
    n = X.shape[0]
    if n < 10:
        raise InputError(f"data: clustering entropy needs at least 10 points. Got {n} instead.")
    if repeats < 1:
        raise InputError(f"repeats: expected a positive integer. Got {repeats} instead.")
    m = int(min(subsample, n if repeats == 1 else int(0.8 * n)))
    rows: dict[str, list[float]] = {"gaussian": [], "knn": [], "difference": [], "null_difference": [],
                                    "duplicates_dropped": []}
    p_used = None
    for _ in range(repeats):
        idx = np.sort(rng.choice(n, size=m, replace=False))
        y = np.asarray(X[idx], dtype=np.float64)
        y_unique = np.unique(y, axis=0)
        rows["duplicates_dropped"].append(float(y.shape[0] - y_unique.shape[0]))
        z, ev = _prepare(y_unique, zscore, pca_dim)
        p_used = z.shape[1]
        hg = gaussian_entropy(ev)
        hk = knn_entropy(z, k)
        rows["gaussian"].append(hg)
        rows["knn"].append(hk)
        rows["difference"].append(hg - hk)
        if null:
            g = rng.standard_normal(z.shape) * np.sqrt(ev)
            zg, evg = _prepare(g, False, None)
            rows["null_difference"].append(gaussian_entropy(evg) - knn_entropy(zg, k))

    def ci(v):
        if len(v) < 2:
            return [float("nan"), float("nan")]
        lo, hi = np.percentile(v, [50 * (1 - confidence), 50 * (1 + confidence)])
        return [float(lo), float(hi)]

    diff = np.array(rows["difference"])
    nd = np.array(rows["null_difference"]) if null else np.full_like(diff, np.nan)
    exc = diff - nd
    return EntropyResult(
        gaussian=float(np.mean(rows["gaussian"])), knn=float(np.mean(rows["knn"])),
        difference=float(diff.mean()), ci=ci(diff),
        null_difference=float(nd.mean()), null_ci=ci(nd) if null else [float("nan")] * 2,
        excess=float(exc.mean()), excess_ci=ci(exc) if null else [float("nan")] * 2,
        per_repeat={k_: [float(v) for v in vals] for k_, vals in rows.items()},
        params={"subsample": m, "pca_dim": p_used, "zscore": zscore, "k": k, "repeats": repeats,
                "replacement": False, "confidence": confidence, "units": "nats"},
    )


# ----------------------------------------------------------------------------------------------
# one layer, a suite
# ----------------------------------------------------------------------------------------------
@dataclass
class GalaxyParams:
    """Parameters of a galaxy analysis (stored with every result)."""

    fit_ranks: tuple[int, int] = DEFAULT_FIT_RANKS
    windows: tuple = DEFAULT_WINDOWS
    normalize: bool = False
    center: bool = True
    null: bool = True
    entropy: bool = True
    entropy_subsample: int = 5000
    entropy_pca_dim: int | None = 100
    entropy_zscore: bool = True
    entropy_k: int = 1
    entropy_repeats: int = 10
    seed: int = 0
    chunk_rows: int = 8192

    def to_dict(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))


@register
@dataclass
class LayerGalaxy(Result):
    """Galaxy-scale record of one layer (one row of ``galaxy.json``)."""

    kind = "layer_galaxy"
    layer: int | None = None
    n_features: int = 0
    n_excluded: int = 0
    exclusions: dict = field(default_factory=dict)
    d_model: int = 0
    slope: float = float("nan")
    slope_ci: list = field(default_factory=list)
    fit_ranks: list = field(default_factory=list)
    r2: float = float("nan")
    sensitivity: list = field(default_factory=list)
    null_slope: float | None = None
    null_slope_ci: list | None = None
    activation_slope: float | None = None
    activation_slope_ci: list | None = None
    entropy: dict | None = None
    provenance: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    eigenvalues: list = field(default_factory=list)
    null_eigenvalues: list | None = None
    activation_eigenvalues: list | None = None

    def summary(self) -> dict:
        """The record without the spectra (what ``galaxy.json`` lists)."""
        d = self.to_dict()
        for k in ("eigenvalues", "null_eigenvalues", "activation_eigenvalues"):
            d.pop(k, None)
        return d


def analyze_layer(
    cloud: FeatureCloud,
    params: GalaxyParams | None = None,
    *,
    activations: np.ndarray | FeatureCloud | None = None,
) -> LayerGalaxy:
    """Galaxy analysis of one point cloud.

    Parameters
    ----------
    cloud : FeatureCloud
        Decoder rows (streamed when the cloud is file-backed).
    params : GalaxyParams, optional
    activations : ndarray (n_tokens, d_model) or FeatureCloud, optional
        Raw residual activations of the same layer; their spectrum is computed by the same code
        (the paper's "SAE features vs raw activations" comparison).
    """
    p = params or GalaxyParams()
    t0 = time.perf_counter()
    cov, n = covariance(cloud, center=p.center, normalize=p.normalize, chunk_rows=p.chunk_rows)
    ev = eigenspectrum(cov)
    del cov
    fit = fit_power_law(ev, p.fit_ranks)
    rec = LayerGalaxy(
        layer=cloud.layer, n_features=n, n_excluded=cloud.n_excluded, exclusions=cloud.exclusions,
        d_model=cloud.d_model, slope=fit.slope, slope_ci=fit.slope_ci, fit_ranks=fit.fit_ranks, r2=fit.r2,
        sensitivity=window_sensitivity(ev, p.windows), provenance=cloud.provenance.to_dict(),
        params=p.to_dict(), eigenvalues=ev.tolist(),
    )
    if p.null:
        null_seed = int(np.random.default_rng([p.seed, 1, -1 if cloud.layer is None else cloud.layer]).integers(2**31))
        null = isotropic_null_cloud(n, cloud.d_model, null_seed)
        ncov, _ = covariance(null, center=p.center, normalize=p.normalize, chunk_rows=p.chunk_rows)
        nev = eigenspectrum(ncov)
        nfit = fit_power_law(nev, p.fit_ranks)
        rec.null_slope, rec.null_slope_ci, rec.null_eigenvalues = nfit.slope, nfit.slope_ci, nev.tolist()
    if activations is not None:
        acov, an = covariance(activations, center=p.center, normalize=p.normalize, chunk_rows=p.chunk_rows)
        if acov.shape[0] != cloud.d_model:
            raise InputError(f"activations: expected d_model {cloud.d_model} to match the SAE. "
                             f"Got {acov.shape[0]} instead.")
        aev = eigenspectrum(acov)
        afit = fit_power_law(aev, p.fit_ranks)
        rec.activation_slope, rec.activation_slope_ci = afit.slope, afit.slope_ci
        rec.activation_eigenvalues = aev.tolist()
    if p.entropy:
        eseed = np.random.default_rng([p.seed, 2, -1 if cloud.layer is None else cloud.layer])
        rec.entropy = clustering_entropy(
            cloud, subsample=p.entropy_subsample, pca_dim=p.entropy_pca_dim, zscore=p.entropy_zscore,
            k=p.entropy_k, repeats=p.entropy_repeats, seed=eseed,
        ).to_dict()
    rec.seconds = time.perf_counter() - t0
    return rec


@register
@dataclass
class GalaxyResult(Result):
    """Galaxy records for the layers of a suite, in layer order."""

    kind = "galaxy"
    source: str = ""
    layers: list = field(default_factory=list)  # list[LayerGalaxy]
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d):
        return cls(source=d.get("source", ""), params=d.get("params", {}),
                   layers=[LayerGalaxy.from_dict(x) for x in d.get("layers", [])])

    def records(self) -> list[dict]:
        return [r.summary() for r in self.layers]

    CSV_COLUMNS = ("layer", "n_features", "n_excluded", "d_model", "slope", "slope_ci_lo", "slope_ci_hi",
                   "fit_rank_lo", "fit_rank_hi", "r2", "null_slope", "activation_slope", "entropy_gaussian",
                   "entropy_knn", "entropy_difference", "entropy_ci_lo", "entropy_ci_hi",
                   "entropy_null_difference", "entropy_excess", "seconds")

    def table(self) -> list[dict]:
        """One flat row per layer (the CSV)."""
        rows = []
        for r in self.layers:
            e = r.entropy or {}
            eci = e.get("ci") or [None, None]
            rows.append({
                "layer": r.layer, "n_features": r.n_features, "n_excluded": r.n_excluded, "d_model": r.d_model,
                "slope": r.slope, "slope_ci_lo": r.slope_ci[0], "slope_ci_hi": r.slope_ci[1],
                "fit_rank_lo": r.fit_ranks[0], "fit_rank_hi": r.fit_ranks[1], "r2": r.r2,
                "null_slope": r.null_slope, "activation_slope": r.activation_slope,
                "entropy_gaussian": e.get("gaussian"), "entropy_knn": e.get("knn"),
                "entropy_difference": e.get("difference"), "entropy_ci_lo": eci[0], "entropy_ci_hi": eci[1],
                "entropy_null_difference": e.get("null_difference"), "entropy_excess": e.get("excess"),
                "seconds": r.seconds,
            })
        return rows

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``galaxy.json`` (one record per layer), ``galaxy.csv`` and ``spectra.npz`` atomically."""
        import csv
        import io

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": atomic_write_json(out / "galaxy.json", self.records())}
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in self.table():
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
        paths["csv"] = atomic_write_text(out / "galaxy.csv", buf.getvalue())
        arrays = {}
        for r in self.layers:
            arrays[f"layer_{r.layer}"] = np.asarray(r.eigenvalues)
            if r.null_eigenvalues:
                arrays[f"null_{r.layer}"] = np.asarray(r.null_eigenvalues)
            if r.activation_eigenvalues:
                arrays[f"activations_{r.layer}"] = np.asarray(r.activation_eigenvalues)
        b = io.BytesIO()
        np.savez(b, **arrays)
        paths["spectra"] = atomic_write_bytes(out / "spectra.npz", b.getvalue())
        return paths

    @classmethod
    def read(cls, out_dir: str | Path) -> "GalaxyResult":
        """Read what :meth:`write` wrote."""
        import json

        out = Path(out_dir)
        path = out / "galaxy.json"
        if not path.exists():
            raise InputError(f"{path}: no galaxy results here; expected the output of `featuregeo galaxy`")
        recs = json.loads(path.read_text())
        spectra = np.load(out / "spectra.npz", allow_pickle=False) if (out / "spectra.npz").exists() else {}
        layers = []
        for d in recs:
            r = LayerGalaxy.from_dict(d)
            for key, attr in (("layer", "eigenvalues"), ("null", "null_eigenvalues"),
                              ("activations", "activation_eigenvalues")):
                name = f"{key}_{r.layer}"
                if name in spectra:
                    setattr(r, attr, spectra[name].tolist())
            layers.append(r)
        return cls(source=(layers[0].provenance.get("source", "") if layers else ""), layers=layers,
                   params=(layers[0].params if layers else {}))


def run_galaxy(
    suite,
    out_dir: str | Path | None = None,
    params: GalaxyParams | None = None,
    *,
    activations: Callable[[int], np.ndarray | None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> GalaxyResult:
    """Galaxy analysis of every layer of a :class:`~featuregeo.core.data.Suite`, one layer in memory at a time.

    With ``out_dir``, each finished layer is written atomically to ``out_dir/.galaxy_layers/`` and
    a rerun with the same parameters and source reuses it (resume after interruption).
    """
    p = params or GalaxyParams()
    part_dir = Path(out_dir) / ".galaxy_layers" if out_dir is not None else None
    records = []
    for layer in suite.layers:
        part = part_dir / f"layer_{layer}.json" if part_dir else None
        if part is not None and part.exists():
            try:
                old = LayerGalaxy.load(part)
                if old.params == p.to_dict() and old.provenance.get("source") is not None:
                    if progress:
                        progress(f"layer {layer}: reused {part}")
                    records.append(old)
                    continue
            except Exception:  # a stale or unreadable partial result is recomputed
                pass
        cloud = suite.load(layer)
        acts = activations(layer) if activations is not None else None
        rec = analyze_layer(cloud, p, activations=acts)
        rec.layer = layer if rec.layer is None else rec.layer
        del cloud
        if part is not None:
            rec.save(part)
        if progress:
            progress(f"layer {layer}: slope {rec.slope:.3f} [{rec.slope_ci[0]:.3f}, {rec.slope_ci[1]:.3f}] "
                     f"null {rec.null_slope if rec.null_slope is None else round(rec.null_slope, 3)} "
                     f"({rec.n_features} features, {rec.n_excluded} excluded, {rec.seconds:.1f}s)")
        records.append(rec)
    return GalaxyResult(source=suite.name, layers=records, params=p.to_dict())


__all__ = [
    "covariance", "eigenspectrum", "fit_power_law", "window_sensitivity", "PowerLawFit", "GaussianRows",
    "isotropic_null_cloud", "gaussian_entropy", "knn_entropy", "clustering_entropy", "EntropyResult",
    "GalaxyParams", "LayerGalaxy", "analyze_layer", "GalaxyResult", "run_galaxy", "DEFAULT_FIT_RANKS",
]

