"""Bias correction of the power-law slope for the sample size (indirect inference by simulation).

When the number of dimensions ``d`` is a sizeable fraction of the number of rows ``n``, the sample
covariance spectrum of a finite cloud is a distorted copy of the population spectrum (the
Marchenko-Pastur spreading), so the slope fitted to the sample spectrum is a biased estimate of the
population exponent: at the Gemma Scope shape (16,384 x 2,304) a planted exponent of -0.53 comes out
near -0.508, at 2,048 x 640 near -0.495.  No resampling of the rows sees that bias (the bootstrap
replicates carry the same distortion), so it is simulated.

:func:`correct_slope_bias` draws ``sims`` Gaussian clouds of the observed ``n x d`` shape once (their
Gram matrices ``W``; a cloud with population spectrum ``p`` then has sample covariance
``diag(sqrt p) W diag(sqrt p)``, so the same draws serve every exponent tried), and finds by Newton
steps the exponent ``a`` whose power law ``rank ** a`` gives, on average over the clouds, the observed
window slope.  ``a`` is the corrected slope; the finite-difference derivative of the simulated slope
(``gain``) scales the interval.  Only the top ranks of each simulated spectrum are needed; they come
from a few subspace iterations started on the population's own leading axes.

Model: a power law over all ranks and Gaussian rows.  Heavy-tailed rows spread the spectrum further
than a Gaussian of the same covariance, and a spectrum far from a power law (see ``curvature`` and
the window range reported beside every slope) is distorted differently; for those the correction is
approximate.  See ``docs/analyses/galaxy.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featuregeo.core.results import Result
from featuregeo.core.util import resolve_rng
from featuregeo.tl.galaxy.entropy import orthonormal_columns
from featuregeo.tl.galaxy.records import ArrayEq, small_eigh

@dataclass(eq=False)
class SlopeBiasCorrection(ArrayEq, Result):
    """The slope corrected for the sample-size distortion of the spectrum (see :func:`correct_slope_bias`).

    Attributes
    ----------
    slope : float
        The bias-corrected slope: the exponent whose simulated samples have the observed mean window slope.
    bias : float
        Observed slope minus corrected slope (positive: the sample spectrum is flatter than the population).
    bias_se : float
        Monte Carlo standard error of the simulated mean slope (the last step's ``sims`` slopes; NaN with one).
    gain : float
        d(simulated slope) / d(population slope) at the estimate (1: no distortion of changes).
    iterations, sims : int
        Newton steps and simulated clouds.
    simulated_slopes : ndarray of shape (iterations + 1, sims)
        Window slope of every simulated sample spectrum, at the observed slope and after each step.
    population : ndarray of shape (iterations + 1,)
        The mean simulated slope at each exponent tried (the last one should equal the observed slope).
    """

    kind = "slope_bias_correction"
    slope: float = float("nan")
    bias: float = float("nan")
    bias_se: float = float("nan")
    gain: float = float("nan")
    iterations: int = 0
    sims: int = 0
    simulated_slopes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    population: np.ndarray = field(default_factory=lambda: np.zeros(0))


def window_slope(ev: np.ndarray, fit_ranks: tuple[int, int]) -> float:
    """Least-squares slope of log10(ev) on log10(rank) over the 1-based inclusive ``fit_ranks``.

    Examples
    --------
    >>> round(window_slope(np.arange(1, 101, dtype=float) ** -0.7, (5, 60)), 9)
    -0.7
    """
    a, b = fit_ranks
    x = np.log10(np.arange(a, b + 1, dtype=np.float64))
    y = np.log10(np.maximum(np.asarray(ev[a - 1:b], dtype=np.float64), np.finfo(np.float64).tiny))
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def gaussian_gram(n: int, d: int, rng: np.random.Generator, *, center: bool = True) -> np.ndarray:
    """A draw of ``W = Z^T Z / (n - 1)`` (``Z`` the centred ``n x d`` matrix of i.i.d. N(0, 1) rows; ``/ n`` and
    uncentred when ``center=False``), float64.

    A Gaussian cloud with covariance ``diag(p)`` has sample covariance ``D W D`` with ``D = diag(sqrt(p))``,
    so one ``W`` serves every population spectrum tried (common random numbers).  ``Z^T Z`` is a
    Wishart(I, m) matrix with ``m = n - 1`` degrees of freedom (``n`` uncentred); when ``m >= d`` it is
    drawn by the Bartlett decomposition ``L L^T`` (``L`` lower triangular, ``L_ii^2 ~ chi^2(m - i + 1)``,
    ``L_ij ~ N(0, 1)`` below the diagonal): ``d^3`` work instead of ``n d^2``; otherwise from ``m`` rows.

    Examples
    --------
    >>> w = gaussian_gram(4000, 50, np.random.default_rng(0))
    >>> round(float(np.mean(np.diag(w))), 2), bool(np.all(np.abs(w - np.diag(np.diag(w))) < 0.1))
    (1.0, True)
    """
    m = n - 1 if center else n
    if m >= d:
        low = np.tril(rng.standard_normal((d, d)), -1)
        low[np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(m - np.arange(d)))
        return (low @ low.T) / m
    z = rng.standard_normal((m, d))
    return (z.T @ z) / m


def sample_spectrum(population: np.ndarray, gram: np.ndarray, top: int | None = None,
                    iterations: int = 8, start: list | None = None) -> np.ndarray:
    """Descending eigenvalues of ``D gram D`` with ``D = diag(sqrt(population))``: the sample spectrum of the
    Gaussian cloud behind ``gram`` (:func:`gaussian_gram`) when its population spectrum is ``population``.

    With ``top``, only the ``top`` largest, as Rayleigh-Ritz values of a few subspace iterations on
    ``top + 64`` columns started on the first coordinate axes (the population's own leading axes); exact
    ``eigh`` when that is most of ``d``.  ``start``: a one-element list holding the basis of a previous
    call on the same ``gram`` (a nearby population), used as the start with 3 iterations, and updated.

    Examples
    --------
    >>> pop = np.arange(1, 201, dtype=float) ** -0.5
    >>> ev = sample_spectrum(pop, gaussian_gram(20000, 200, np.random.default_rng(0)))
    >>> bool(np.all(np.abs(ev[:20] / pop[:20] - 1) < 0.1))
    True
    """
    pop = np.asarray(population, dtype=np.float64)
    d = pop.size
    scale = float(pop[0]) if pop[0] > 0 else 1.0
    sd = np.sqrt(np.maximum(pop / scale, 0.0))
    c = gram * sd[:, None] * sd[None, :]
    keep = d if top is None else min(d, int(top))
    k = min(d, keep + 64)
    if 2 * k >= d:
        if d <= 1024:  # small decompositions run many times faster on one BLAS thread of a busy machine
            w = small_eigh(c, eigvals_only=True)[::-1]
        else:
            from scipy import linalg

            w = linalg.eigh(c, eigvals_only=True, check_finite=False, driver="evd")[::-1]
        return np.maximum(w[:keep], 0.0) * scale
    c32 = c.astype(np.float32)
    if start and start[0] is not None and start[0].shape == (d, k):
        q, iterations = start[0], min(iterations, 3)
    else:
        q = np.zeros((d, k), dtype=np.float64)
        q[np.arange(k), np.arange(k)] = 1.0
    for _ in range(iterations):
        q = orthonormal_columns((c32 @ q.astype(np.float32)).astype(np.float64))
    if start is not None:
        start[:] = [q]
    w = small_eigh(q.T @ (c @ q), eigvals_only=True)[::-1]
    return np.maximum(w[:keep], 0.0) * scale


def power_law(d: int, slope: float) -> np.ndarray:
    """``rank ** slope`` for ranks 1..d: a population spectrum with log-log slope ``slope``."""
    return np.arange(1, d + 1, dtype=np.float64) ** slope


def correct_slope_bias(eigenvalues: np.ndarray, n: int, fit_ranks: tuple[int, int], *, iterations: int = 2,
                       sims: int = 2, center: bool = True, seed: int | np.random.Generator = 0,
                       delta: float = 0.02) -> SlopeBiasCorrection:
    """The exponent of the power law whose ``n``-row Gaussian samples have, on average, the observed window slope.

    Starting at the observed slope ``s``, ``iterations`` Newton steps ``a += (s - m(a)) / gain``, with
    ``m(a)`` the mean window slope of the simulated clouds' sample spectra under population ``rank ** a``
    and ``gain = m'(a)`` (finite difference over ``delta`` on the same clouds).

    Parameters
    ----------
    eigenvalues : ndarray
        The observed (sample) spectrum, descending, all ``d`` of them.
    n : int
        Rows behind it.
    fit_ranks : (int, int)
        The (clipped) fit window.
    iterations : int, default=2
        Newton steps.
    sims : int, default=2
        Simulated clouds.
    center : bool, default=True
        Whether the observed covariance was centred.
    seed : int or Generator
    delta : float, default=0.02

    Returns
    -------
    SlopeBiasCorrection

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((600, 300)) * np.sqrt(power_law(300, -0.5))
    >>> from featuregeo.tl.galaxy.spectrum import covariance, eigenspectrum
    >>> ev = eigenspectrum(covariance(x)[0])
    >>> raw = window_slope(ev, (5, 60))
    >>> fixed = correct_slope_bias(ev, 600, (5, 60), seed=1)
    >>> abs(fixed.slope + 0.5) < abs(raw + 0.5) / 2
    True
    """
    rng = resolve_rng(seed)
    ev = np.asarray(eigenvalues, dtype=np.float64)
    d = ev.size
    observed = window_slope(ev, fit_ranks)
    grams = [gaussian_gram(n, d, rng, center=center) for _ in range(sims)]
    top = int(fit_ranks[1])
    starts: list[list] = [[None] for _ in grams]  # warm starts: each exponent tried is close to the last

    def simulate(a: float) -> np.ndarray:
        return np.array([window_slope(sample_spectrum(power_law(d, a), g, top, start=st), fit_ranks)
                         for g, st in zip(grams, starts)])

    a = observed
    slopes = [simulate(a)]
    gain = float(np.mean(slopes[0] - simulate(a - delta)) / delta)
    g = gain if np.isfinite(gain) and gain > 0.2 else 1.0
    for _ in range(iterations):
        a += (observed - float(np.mean(slopes[-1]))) / g
        slopes.append(simulate(a))
    se = float(np.std(slopes[-1], ddof=1) / np.sqrt(sims)) if sims > 1 else float("nan")
    return SlopeBiasCorrection(slope=float(a), bias=observed - float(a), bias_se=se, gain=gain,
                               iterations=int(iterations), sims=int(sims), simulated_slopes=np.array(slopes),
                               population=np.array([float(np.mean(v)) for v in slopes]))


__all__ = ["SlopeBiasCorrection", "correct_slope_bias", "gaussian_gram", "sample_spectrum", "power_law",
           "window_slope"]
