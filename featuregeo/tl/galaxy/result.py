"""Parameters and results of the galaxy analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.data import DEFAULT_CHUNK_ROWS, Provenance
from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, Result, check_float, check_int
from featuregeo.tl.galaxy.entropy import EntropyEstimate
from featuregeo.tl.galaxy.powerlaw import DEFAULT_FIT_RANKS, DEFAULT_WINDOWS, PowerLawFit, check_window
from featuregeo.tl.galaxy.records import ArrayEq


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected True or False. Got {value!r} instead.")


@dataclass(frozen=True)
class GalaxyParams(Params):
    """Parameters of a galaxy analysis (stored with every result).

    Parameters
    ----------
    fit_ranks : (int, int), default=(11, 150)
        1-based inclusive rank window of the power-law fit (the paper's).
    windows : tuple of (int, int)
        Extra windows for the fit-window sensitivity.
    normalize : bool, default=False
        Scale decoder rows to unit norm before the covariance.
    center : bool, default=True
        Covariance (True) or uncentered second moment (False).
    null : bool, default=True
        Also fit an isotropic Gaussian cloud of the same shape through the same code.
    entropy : bool, default=True
        Compute the clustering entropy.
    entropy_subsample : int, default=5000
        Rows per entropy repeat (at most 80% of the rows).
    entropy_pca_dim : int or None, default=100
        Principal axes kept for the entropy (None: all).
    entropy_zscore : bool, default=True
        z-score columns before the entropy PCA.
    entropy_k : int, default=1
        Neighbour order of the Kozachenko-Leonenko estimator.
    entropy_repeats : int, default=20
        Independent subsamples.
    entropy_null : bool, default=True
        The entropy's nulls: a same-spectrum Gaussian (the estimator's bias), and two unclustered
        non-Gaussian clouds (the cloud's own Mahalanobis radii on uniform directions; each principal
        coordinate's own marginal, permuted independently).  Clustering is the excess over the strongest.
    slope_bootstrap : int, default=50
        Row-bootstrap replicates of the slope interval (resample feature rows, recompute the
        spectrum, refit); 0 keeps the regression t-interval (too narrow: it treats correlated
        log-eigenvalues as independent).
    slope_bias_sims : int, default=2
        Simulated Gaussian clouds of the same ``n x d`` shape behind the correction of the slope for
        the sample-size distortion of the spectrum (:mod:`~featuregeo.tl.galaxy.bias`); the interval
        is then centred on the corrected slope.  0: no correction (the interval is around the sample
        slope and misses the population exponent when ``d / n`` is sizeable).
    slope_bias_iterations : int, default=2
        Newton steps of that correction.
    confidence : float, default=0.95
        Level of every interval.
    rank_rtol : float or None, default=None
        Relative round-off tolerance of the numerical rank (None: ``d * eps(float32)``).
    seed : int, default=0
        Seed of the null cloud and the entropy subsamples (non-negative).
    chunk_rows : int, default=16384
        Rows per streamed chunk.
    """

    fit_ranks: tuple[int, int] = DEFAULT_FIT_RANKS
    windows: tuple[tuple[int, int], ...] = DEFAULT_WINDOWS
    normalize: bool = False
    center: bool = True
    null: bool = True
    entropy: bool = True
    entropy_subsample: int = 5000
    entropy_pca_dim: int | None = 100
    entropy_zscore: bool = True
    entropy_k: int = 1
    entropy_repeats: int = 20
    entropy_null: bool = True
    slope_bootstrap: int = 50
    slope_bias_sims: int = 2
    slope_bias_iterations: int = 2
    confidence: float = 0.95
    rank_rtol: float | None = None
    seed: int = 0
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def validate(self) -> "GalaxyParams":
        """Check every field; raise a one-line :class:`InputError` naming the first bad one."""
        check_window(self.fit_ranks, "fit_ranks")
        if not isinstance(self.windows, (tuple, list)):
            raise InputError(f"windows: expected a tuple of (a, b) rank windows. Got {self.windows!r} instead.")
        for w in self.windows:
            check_window(w, "windows")
        for name in ("normalize", "center", "null", "entropy", "entropy_zscore", "entropy_null"):
            _check_bool(name, getattr(self, name))
        check_int("entropy_subsample", self.entropy_subsample, minimum=10)
        check_int("entropy_pca_dim", self.entropy_pca_dim, minimum=1, allow_none=True)
        check_int("entropy_k", self.entropy_k, minimum=1)
        check_int("entropy_repeats", self.entropy_repeats, minimum=1)
        check_int("slope_bootstrap", self.slope_bootstrap, minimum=0)
        if 0 < self.slope_bootstrap < 20:
            raise InputError(f"slope_bootstrap: expected 0 (t-interval) or at least 20 replicates. "
                             f"Got {self.slope_bootstrap} instead.")
        check_int("slope_bias_sims", self.slope_bias_sims, minimum=0)
        check_int("slope_bias_iterations", self.slope_bias_iterations, minimum=1)
        if self.entropy_k >= self.entropy_subsample:
            raise InputError(f"entropy_k: expected fewer neighbours than entropy_subsample ({self.entropy_subsample}). "
                             f"Got {self.entropy_k} instead.")
        check_float("confidence", self.confidence, low=0, high=1, low_open=True, high_open=True)
        check_float("rank_rtol", self.rank_rtol, low=0, high=1, low_open=True, high_open=True, allow_none=True)
        check_int("seed", self.seed, minimum=0)
        check_int("chunk_rows", self.chunk_rows, minimum=1)
        return self


@dataclass(eq=False)
class GalaxyLayer(ArrayEq, Result):
    """Galaxy-scale record of one layer (one row of ``galaxy.csv``).

    See ``docs/analyses/galaxy.md`` for every field with its units.
    """

    kind = "galaxy_layer"
    layer: int | None = None
    n_features: int = 0
    n_excluded: int = 0
    exclusions: dict[str, int] = field(default_factory=dict)
    d_model: int = 0
    numerical_rank: int = 0
    slope: float = float("nan")
    slope_ci: tuple[float, float] = (float("nan"), float("nan"))
    r2: float = float("nan")
    fit_ranks: tuple[int, int] = DEFAULT_FIT_RANKS
    window_clipped: str | None = None
    sensitivity: list[PowerLawFit] = field(default_factory=list)
    null_slope: float | None = None
    null_slope_ci: tuple[float, float] | None = None
    activation_slope: float | None = None
    activation_slope_ci: tuple[float, float] | None = None
    activation_tokens: int | None = None
    entropy: EntropyEstimate | None = None
    provenance: Provenance | None = None
    seconds: float = field(default=0.0, compare=False)
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_eigenvalues: np.ndarray | None = None
    activation_eigenvalues: np.ndarray | None = None
    #: how ``slope_ci`` was made: e.g. "bias-corrected (2 simulated clouds) +- row bootstrap (50 replicates)",
    #: "row bootstrap (N replicates, normal)" or "regression t" (slope_bootstrap=0)
    slope_ci_method: str = "regression t"
    #: the slope corrected for the sample-size distortion (None: slope_bias_sims=0); ``slope_ci`` is around it
    slope_corrected: float | None = None
    #: slope - slope_corrected, its Monte Carlo standard error, and d(sample slope)/d(population slope)
    slope_bias: float | None = None
    slope_bias_se: float | None = None
    slope_bias_gain: float | None = None
    #: the sample slope +- its row-bootstrap spread (the interval of the sample statistic, not of the exponent)
    slope_sample_ci: tuple[float, float] | None = None
    slope_t_ci: tuple[float, float] | None = None
    slope_bootstrap_sd: float | None = None
    slope_replicates: np.ndarray | None = None
    curvature: float = float("nan")
    rms_residual: float = float("nan")
    window_slope_range: tuple[float, float] | None = None
    null_curvature: float | None = None
    activation_curvature: float | None = None
    activation_rms_residual: float | None = None

    @property
    def exponent(self) -> float:
        """The power-law exponent: ``slope_corrected`` when the correction ran (``slope_ci`` is centred on it),
        else the raw least-squares ``slope``."""
        return self.slope if self.slope_corrected is None else self.slope_corrected


@dataclass(eq=False)
class GalaxyResult(ArrayEq, Result):
    """Galaxy records for the layers of a suite, in layer order, with the parameters that made them."""

    kind = "galaxy"
    source: str = ""
    params: GalaxyParams = field(default_factory=GalaxyParams)
    layers: list[GalaxyLayer] = field(default_factory=list)

    def layer(self, layer: int | None) -> GalaxyLayer:
        """The record of one layer."""
        for r in self.layers:
            if r.layer == layer:
                return r
        raise InputError(f"layer: {layer} is not in this galaxy result; expected one of {[r.layer for r in self.layers]}")

    def slopes(self) -> dict[int | None, float]:
        """Slope per layer."""
        return {r.layer: r.slope for r in self.layers}

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per layer (the ``galaxy.csv`` table)."""
        out = []
        for r in self.layers:
            e = r.entropy
            ci = lambda t, i: None if t is None else t[i]  # noqa: E731
            out.append({
                "layer": r.layer, "n_features": r.n_features, "n_excluded": r.n_excluded, "d_model": r.d_model,
                "numerical_rank": r.numerical_rank, "slope": r.slope, "slope_ci_lo": r.slope_ci[0],
                "slope_ci_hi": r.slope_ci[1], "fit_rank_lo": r.fit_ranks[0], "fit_rank_hi": r.fit_ranks[1],
                "window_clipped": r.window_clipped, "r2": r.r2, "slope_ci_method": r.slope_ci_method,
                "slope_t_ci_lo": ci(r.slope_t_ci, 0), "slope_t_ci_hi": ci(r.slope_t_ci, 1),
                "slope_bootstrap_sd": r.slope_bootstrap_sd, "slope_corrected": r.slope_corrected,
                "slope_bias": r.slope_bias, "slope_bias_se": r.slope_bias_se, "slope_bias_gain": r.slope_bias_gain,
                "slope_sample_ci_lo": ci(r.slope_sample_ci, 0), "slope_sample_ci_hi": ci(r.slope_sample_ci, 1),
                "curvature": r.curvature, "rms_residual": r.rms_residual,
                "window_slope_min": ci(r.window_slope_range, 0), "window_slope_max": ci(r.window_slope_range, 1),
                "null_slope": r.null_slope, "null_curvature": r.null_curvature,
                "activation_slope": r.activation_slope,
                "activation_slope_ci_lo": ci(r.activation_slope_ci, 0),
                "activation_slope_ci_hi": ci(r.activation_slope_ci, 1),
                "activation_curvature": r.activation_curvature,
                "entropy_gaussian": e.gaussian if e else None, "entropy_knn": e.knn if e else None,
                "entropy_difference": e.difference if e else None,
                "entropy_ci_lo": ci(e.ci, 0) if e else None, "entropy_ci_hi": ci(e.ci, 1) if e else None,
                "entropy_null_difference": e.null_difference if e else None,
                "entropy_excess": e.excess if e else None, "entropy_strongest_null": e.strongest_null if e else None,
                **{f"entropy_null_{u.name}": u.difference for u in (e.nulls if e else [])},
                "entropy_excess_gaussian": e.excess_gaussian if e else None,
                "entropy_excess_ci_lo": ci(e.excess_ci, 0) if e else None,
                "entropy_excess_ci_hi": ci(e.excess_ci, 1) if e else None,
                "seconds": r.seconds,
            })
        return out


__all__ = ["GalaxyParams", "GalaxyLayer", "GalaxyResult"]
