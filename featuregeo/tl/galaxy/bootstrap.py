"""Row bootstrap of the power-law slope: resample feature rows, recompute the spectrum, refit.

The ordinary regression t-interval treats ~140 log-eigenvalues as independent observations; they
are not (every eigenvalue comes from the same rows), so that interval is far too narrow.  Here the
*rows* are resampled: replicate ``b`` gives every row a Poisson(1) weight (a hash of its row id and
a per-replicate salt, so the weights do not depend on chunking), the weighted covariance is
accumulated in the same streamed pass, its spectrum recomputed and the slope refitted.

Cheap route: the weighted covariances are accumulated in the span of the top ``K`` eigenvectors
of the full covariance (``K`` the window's last rank plus 64), and their eigenvalues are the
Rayleigh-Ritz values in that span (exact when ``K = d``).  The interval is the fitted slope plus or
minus the normal quantile times the replicates' standard deviation (:func:`normal_interval`; the
spread of the sampling distribution, centred on the estimate, see :func:`percentile_interval`).

Limits: the bootstrap measures the *sampling spread* of the sample spectrum's slope.  When the
number of dimensions is a sizeable fraction of the number of rows, the sample eigenvalues are
systematically distorted (the Marchenko-Pastur spreading) and the sample slope is a biased
estimate of the population exponent; no resampling of rows reproduces that bias.  It is simulated
and removed in :mod:`featuregeo.tl.galaxy.bias`, which centres the interval on the corrected slope.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
from scipy import linalg

from featuregeo.core.data import DEFAULT_CHUNK_ROWS, FeatureCloud
from featuregeo.core.util import resolve_rng
from featuregeo.tl.galaxy.entropy import mix64, top_eigenvectors
from featuregeo.tl.galaxy.records import one_thread, small_eigh
from featuregeo.tl.galaxy.spectrum import iter_rows, prepare_rows

#: cumulative Poisson(1) probabilities (weights above 20 have probability < 1e-19)
_POISSON1_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(21)])


def poisson_weights(ids: np.ndarray, salts: np.ndarray) -> np.ndarray:
    """Poisson(1) bootstrap weights, shape ``(len(salts), len(ids))``, a pure function of row id and salt.

    Examples
    --------
    >>> w = poisson_weights(np.arange(200000), np.array([7], dtype=np.uint64))
    >>> round(float(w.mean()), 2), round(float(w.var()), 2)
    (1.0, 1.0)
    """
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    u = (mix64(ids[None, :] ^ np.asarray(salts, dtype=np.uint64)[:, None]) >> np.uint64(11)).astype(np.float64)
    u *= 2.0 ** -53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float32)


def top_subspace(cov: np.ndarray, k: int, seed: int | np.random.Generator = 0, iterations: int = 10) -> np.ndarray:
    """Orthonormal ``d x k`` basis of the leading eigenvectors of a symmetric matrix.

    Exact (``eigh``) when ``2 k >= d``; otherwise randomized subspace iteration with 20 extra columns
    (:func:`~featuregeo.tl.galaxy.entropy.top_eigenvectors`).
    """
    d = cov.shape[0]
    if 2 * k >= d:
        w, v = linalg.eigh(cov, check_finite=False, driver="evd")
        return v[:, ::-1][:, :min(k, d)]
    return top_eigenvectors(lambda q: cov @ q, d, k, resolve_rng(seed), iterations)


def _slope(ev: np.ndarray, a: int, b: int) -> float:
    x = np.log10(np.arange(a, b + 1, dtype=np.float64))
    y = np.log10(np.maximum(ev[a - 1:b], np.finfo(np.float64).tiny))
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def bootstrap_slopes(data: FeatureCloud | np.ndarray, cov: np.ndarray, mean: np.ndarray, fit_ranks: tuple[int, int],
                     *, replicates: int = 50, center: bool = True, normalize: bool = False,
                     seed: int | np.random.Generator = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     extra_dims: int | None = None) -> tuple[np.ndarray, float]:
    """Slopes of ``replicates`` row-bootstrap spectra, and the slope of the same route without weights.

    Parameters
    ----------
    data : FeatureCloud or ndarray
        The rows behind ``cov`` (streamed a second time).
    cov, mean : ndarray
        Their covariance and mean (as accumulated by :func:`~featuregeo.tl.galaxy.spectrum.accumulate`).
    fit_ranks : (int, int)
        The (already clipped) window.
    replicates : int, default=50
    center, normalize : bool
        As for the covariance.
    seed : int or Generator
        Draws the per-replicate salts and the subspace start.
    extra_dims : int, optional
        The span holds ``fit_ranks[1] + extra_dims`` leading eigenvectors (default 64: a replicate's
        leading eigenvectors leak into neighbouring ranks, so the span must reach past the window).

    Returns
    -------
    slopes : ndarray of shape (replicates,)
    base : float
        The slope of the unweighted covariance through the same projected route.
    """
    rng = resolve_rng(seed)
    a, b = fit_ranks
    d = cov.shape[0]
    k = min(d, b + (64 if extra_dims is None else int(extra_dims)))
    salts = rng.integers(0, 2**63, size=replicates, dtype=np.int64).astype(np.uint64)
    # rows are scaled by a power of two (exact) so their float32 products neither overflow nor underflow
    peak = float(np.max(np.abs(cov))) if cov.size else 0.0
    e = int(np.frexp(np.sqrt(peak))[1]) if peak > 0 else 0
    cov, mean = np.ldexp(cov, -2 * e), np.ldexp(np.asarray(mean, dtype=np.float64), -e)
    v = top_subspace(cov, k, rng).astype(np.float32)
    k = v.shape[1]  # a rank-deficient covariance has fewer directions
    shift = (mean if center else np.zeros(d)).astype(np.float32)
    s0 = np.zeros(replicates)
    s1 = np.zeros((replicates, k))
    s2 = np.zeros((replicates, k, k))
    b1, b2, n = np.zeros(k), np.zeros((k, k)), 0
    n_rows = data.n_features if isinstance(data, FeatureCloud) else np.asarray(data).shape[0]
    # small products lose 10x on two BLAS threads of a busy machine: one thread below ~50 GFLOP in all
    with (one_thread() if 2.0 * replicates * n_rows * k * k < 5e10 else nullcontext()):
        return _accumulate(data, chunk_rows, normalize, shift, v, salts, center, (a, b), (s0, s1, s2, b1, b2),
                           e)


def _accumulate(data, chunk_rows, normalize, shift, v, salts, center, window, sums, e) -> tuple[np.ndarray, float]:
    s0, s1, s2, b1, b2 = sums
    a, b = window
    replicates = salts.size
    n = 0
    for ids, chunk in iter_rows(data, chunk_rows):
        y = (np.ldexp(prepare_rows(chunk, normalize).astype(np.float64), -e).astype(np.float32) - shift) @ v
        w = poisson_weights(ids, salts)
        s0 += w.sum(axis=1)
        s1 += w @ y
        b1 += y.sum(axis=0, dtype=np.float64)
        b2 += y.T @ y
        n += y.shape[0]
        for r in range(replicates):
            s2[r] += (y * w[r][:, None]).T @ y

    def spectrum(t0: float, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        c = (t2 - np.outer(t1, t1) / t0) / (t0 - 1) if center else t2 / t0
        return small_eigh((c + c.T) * 0.5, eigvals_only=True)[::-1]

    base = _slope(spectrum(float(n), b1, b2), a, b)
    slopes = np.array([_slope(spectrum(s0[r], s1[r], s2[r]), a, b) for r in range(replicates)])
    return slopes, base


def percentile_interval(estimate: float, slopes: np.ndarray, confidence: float) -> tuple[float, float]:
    """``estimate`` plus the percentiles of the replicates' deviations from their own median.

    Centred on the replicates' median rather than on ``base``: the resampled spectra carry their own
    high-dimensional distortion (duplicated rows spread the eigenvalues further), which says nothing
    about the estimate's bias and which the projected route only partly reproduces; their *spread*
    is what both routes agree on (tests/test_galaxy.py).
    """
    lo, hi = np.percentile(slopes - np.median(slopes), [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(estimate + lo), float(estimate + hi)


def normal_interval(estimate: float, slopes: np.ndarray, confidence: float) -> tuple[float, float]:
    """``estimate`` plus or minus the normal quantile times the replicates' standard deviation (ddof=1).

    Steadier than percentiles with few replicates; centred on the estimate for the reason given in
    :func:`percentile_interval`.

    Examples
    --------
    >>> lo, hi = normal_interval(-0.5, np.array([-0.51, -0.49, -0.5, -0.52, -0.48]), 0.95)
    >>> round(hi - lo, 4)
    0.062
    """
    from scipy import stats

    half = stats.norm.ppf(0.5 + confidence / 2) * float(np.std(slopes, ddof=1))
    return float(estimate - half), float(estimate + half)


__all__ = ["poisson_weights", "top_subspace", "bootstrap_slopes", "percentile_interval", "normal_interval"]
