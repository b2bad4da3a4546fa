"""Power-law fits of a descending eigenvalue spectrum over a rank window, clipped at the numerical rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.tl.galaxy.records import ArrayEq
from featuregeo.tl.galaxy.spectrum import numerical_rank

DEFAULT_FIT_RANKS = (11, 150)
DEFAULT_WINDOWS = ((2, 50), (11, 100), (11, 150), (11, 300), (51, 300), (101, 500))
MIN_FIT_POINTS = 3


@dataclass(eq=False)
class PowerLawFit(ArrayEq, Result):
    """Least-squares line ``log10(eigenvalue) = intercept + slope * log10(rank)`` over ranks ``fit_ranks``.

    Attributes
    ----------
    slope, intercept : float
        The fitted line (slope is dimensionless; a pure power law ``rank^-a`` has slope ``-a``).
    slope_ci : tuple of float
        Two-sided t-interval of the slope at ``confidence`` (df = n_points - 2).
    stderr, r2 : float
        Standard error of the slope; coefficient of determination of the fit.
    fit_ranks : tuple of int
        The 1-based inclusive ranks actually fitted.
    requested_ranks : tuple of int
        The window asked for.
    n_points : int
        Number of ranks fitted.
    numerical_rank : int
        Eigenvalues above round-off (see :func:`~featuregeo.tl.galaxy.spectrum.numerical_rank`).
    clipped : str or None
        Why the window was shortened (None when it was not).
    curvature : float
        Quadratic coefficient ``c`` of ``log10(eigenvalue) = a + b x + c x^2`` with ``x`` the centred
        log10(rank) over the same window (per decade squared; 0 for a pure power law, negative when the
        spectrum bends down).
    rms_residual : float
        Root-mean-square residual of the straight-line fit, in log10 units (0 for a pure power law).
    """

    kind = "power_law_fit"
    slope: float = float("nan")
    intercept: float = float("nan")
    slope_ci: tuple[float, float] = (float("nan"), float("nan"))
    stderr: float = float("nan")
    r2: float = float("nan")
    fit_ranks: tuple[int, int] = DEFAULT_FIT_RANKS
    requested_ranks: tuple[int, int] = DEFAULT_FIT_RANKS
    n_points: int = 0
    numerical_rank: int = 0
    confidence: float = 0.95
    clipped: str | None = None
    curvature: float = float("nan")
    rms_residual: float = float("nan")


def curvature(x: np.ndarray, y: np.ndarray) -> float:
    """Quadratic coefficient of ``y`` on centred ``x`` (least squares), ``nan`` with fewer than 4 points.

    Examples
    --------
    >>> x = np.log10(np.arange(1, 101.0))
    >>> round(curvature(x, -0.5 * x), 9), round(curvature(x, -0.2 * (x - x.mean()) ** 2), 9)
    (0.0, -0.2)
    """
    if x.size < 4:
        return float("nan")
    xc = x - x.mean()
    return float(np.polyfit(xc, y, 2)[0])


def check_window(fit_ranks: Sequence[int], name: str = "fit_ranks") -> tuple[int, int]:
    """``(a, b)`` as ints with ``1 <= a`` and ``b - a + 1 >= 3``; else a one-line InputError."""
    try:
        a, b = (int(v) for v in fit_ranks)
        ok = all(float(v) == int(v) and not isinstance(v, bool) for v in fit_ranks)
    except (TypeError, ValueError):
        ok = False
    if not ok or a < 1 or b - a + 1 < MIN_FIT_POINTS:
        raise InputError(f"{name}: expected two ranks (a, b) with 1 <= a and b >= a + 2. Got {fit_ranks!r} instead.")
    return a, b


def fit_power_law(eigenvalues: np.ndarray, fit_ranks: Sequence[int] = DEFAULT_FIT_RANKS, confidence: float = 0.95,
                  *, n_rows: int | None = None, center: bool = True, rank_rtol: float | None = None) -> PowerLawFit:
    """Fit a power law to a descending spectrum over 1-based ranks ``fit_ranks = (a, b)`` inclusive.

    The window is clipped at the numerical rank (eigenvalues at round-off level, or beyond the
    rank ``n_rows`` allows, carry no power law) and the clipping is recorded in ``clipped``.

    Parameters
    ----------
    eigenvalues : ndarray
        Descending eigenvalues (from :func:`~featuregeo.tl.galaxy.spectrum.eigenspectrum`).
    fit_ranks : (int, int), default=(11, 150)
        Window of ranks, as in the paper.
    confidence : float, default=0.95
        Level of the slope's t-interval.
    n_rows, center : optional
        Rows and centring behind the spectrum (bounds the rank at ``n_rows - 1`` when centred).
    rank_rtol : float, optional
        Relative round-off tolerance (default ``d * eps(float32)``).

    Returns
    -------
    PowerLawFit

    Raises
    ------
    InputError
        When fewer than 3 ranks of the window lie above round-off.

    Examples
    --------
    >>> fit = fit_power_law(np.arange(1, 201, dtype=float) ** -0.5)
    >>> round(fit.slope, 6), fit.fit_ranks
    (-0.5, (11, 150))
    """
    a, b = check_window(fit_ranks)
    if not 0 < confidence < 1:
        raise InputError(f"confidence: expected a number in (0, 1). Got {confidence!r} instead.")
    ev = np.asarray(eigenvalues, dtype=np.float64)
    rank = numerical_rank(ev, n_rows=n_rows, center=center, rtol=rank_rtol)
    b_eff = min(b, rank)
    if b_eff - a + 1 < MIN_FIT_POINTS:
        raise InputError(
            f"fit_ranks: window {a}..{b} leaves {max(0, b_eff - a + 1)} ranks above round-off "
            f"(numerical rank {rank} of {ev.size} eigenvalues); expected at least {MIN_FIT_POINTS} "
            "(choose a window inside the numerical rank)"
        )
    clipped = None
    if b_eff < b:
        clipped = (f"window {a}..{b} clipped to {a}..{b_eff}: numerical rank {rank} of {ev.size} "
                   + ("(rows bound the rank)" if n_rows is not None and rank == n_rows - (1 if center else 0)
                      and rank < ev.size else "(smaller eigenvalues are round-off)"))
    x = np.log10(np.arange(a, b_eff + 1, dtype=np.float64))
    y = np.log10(ev[a - 1:b_eff])
    res = stats.linregress(x, y)
    t = stats.t.ppf(0.5 + confidence / 2, x.size - 2)
    resid = y - (res.intercept + res.slope * x)
    return PowerLawFit(
        slope=float(res.slope), intercept=float(res.intercept),
        slope_ci=(float(res.slope - t * res.stderr), float(res.slope + t * res.stderr)),
        stderr=float(res.stderr), r2=float(res.rvalue ** 2), fit_ranks=(a, b_eff), requested_ranks=(a, b),
        n_points=int(x.size), numerical_rank=rank, confidence=float(confidence), clipped=clipped,
        curvature=curvature(x, y), rms_residual=float(np.sqrt(np.mean(resid ** 2))),
    )


def window_sensitivity(eigenvalues: np.ndarray, windows: Iterable[Sequence[int]] = DEFAULT_WINDOWS,
                       confidence: float = 0.95, *, n_rows: int | None = None, center: bool = True,
                       rank_rtol: float | None = None) -> list[PowerLawFit]:
    """Fits over several rank windows; windows with fewer than 3 ranks above round-off are skipped.

    Examples
    --------
    >>> [f.fit_ranks for f in window_sensitivity(np.arange(1, 80, dtype=float) ** -1.0, [(2, 50), (51, 300)])]
    [(2, 50), (51, 79)]
    """
    out = []
    rank = numerical_rank(eigenvalues, n_rows=n_rows, center=center, rtol=rank_rtol)
    for w in windows:
        a, b = check_window(w, "windows")
        if min(b, rank) - a + 1 < MIN_FIT_POINTS:
            continue
        out.append(fit_power_law(eigenvalues, (a, b), confidence, n_rows=n_rows, center=center, rank_rtol=rank_rtol))
    return out


__all__ = ["PowerLawFit", "fit_power_law", "curvature", "window_sensitivity", "check_window", "DEFAULT_FIT_RANKS",
           "DEFAULT_WINDOWS"]
