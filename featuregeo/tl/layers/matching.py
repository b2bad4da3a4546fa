"""SAE geometry across layers: galaxy slope per layer and feature matching between adjacent layers,
with a random-rotation null.

:func:`match_features` finds, for every decoder row of layer ``a``, its best cosine match among the
rows of layer ``b`` (and vice versa), plus a one-to-one assignment
(``scipy.optimize.linear_sum_assignment`` maximising total cosine).  The null rotates layer ``b`` by a
seeded Haar-random orthogonal matrix — its own geometry kept, its alignment with ``a`` destroyed —
and matches again.  :func:`sae_geometry` runs this over the adjacent available layers of a suite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import Suite
from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.core.util import fingerprint, resolve_rng, say, seed_sequence, unit_rows

DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
HIST_BINS = 40
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

__all__ = ["DEFAULT_THRESHOLDS", "HIST_BINS", "QUANTILES", "FeatureMatch", "MatchPair", "SaeLayer", "SaeGeometry",
           "hist_edges", "random_rotation", "match_features", "layer_slope", "sae_geometry"]


@dataclass
class FeatureMatch(Result):
    """Cosine matching of the decoder rows of layer ``a`` to those of layer ``b``.

    Fractions are per threshold (the ``thresholds`` they were computed at are stored with them).

    Attributes
    ----------
    n_a, n_b : int
        Rows (features) of ``a`` and ``b``.
    thresholds : tuple of float
        Cosine thresholds of the ``frac_*`` lists.
    best_mean : float
        Mean over rows of ``a`` of the best cosine in ``b``.
    best_quantiles : list of float
        Quantiles :data:`QUANTILES` of that best cosine.
    best_ba_mean : float
        Mean over rows of ``b`` of the best cosine in ``a``.
    frac_persist : list of float
        Fraction of rows of ``a`` whose best match in ``b`` exceeds each threshold.
    frac_vanish : list of float
        ``1 - frac_persist``.
    frac_appear : list of float
        Fraction of rows of ``b`` with no match in ``a`` above each threshold.
    best_hist : ndarray of int
        Histogram of the best cosine of rows of ``a`` over :func:`hist_edges`.
    assigned_mean, assigned_quantiles, frac_assigned, assigned_hist :
        The same for the one-to-one assignment (None without ``assignment``).
    assignment : ndarray of int or None
        Row of ``b`` assigned to each row of ``a`` (only when ``n_a <= n_b``; not kept in tables).
    """

    kind = "feature_match"
    n_a: int = 0
    n_b: int = 0
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    best_mean: float = float("nan")
    best_quantiles: list[float] = field(default_factory=list)
    best_ba_mean: float = float("nan")
    frac_persist: list[float] = field(default_factory=list)
    frac_vanish: list[float] = field(default_factory=list)
    frac_appear: list[float] = field(default_factory=list)
    best_hist: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    assigned_mean: float | None = None
    assigned_quantiles: list[float] | None = None
    frac_assigned: list[float] | None = None
    assigned_hist: np.ndarray | None = None
    assignment: np.ndarray | None = None


@dataclass
class MatchPair(Result):
    """Matching between two adjacent available SAE layers: the real table and its rotation null.

    Attributes
    ----------
    layer_a, layer_b : int
    real : FeatureMatch
    null : FeatureMatch or None
        ``b`` rotated by a seeded Haar-random orthogonal matrix (one rotation for every pair).
    """

    kind = "match_pair"
    layer_a: int = 0
    layer_b: int = 0
    real: FeatureMatch = field(default_factory=FeatureMatch)
    null: FeatureMatch | None = None


@dataclass
class SaeLayer(Result):
    """Galaxy slope of one SAE layer.

    Attributes
    ----------
    layer : int
    n_features : int
        Decoder rows kept (finite, non-zero).
    slope : float or None
        Power-law slope of the covariance eigenspectrum (None when the fit was impossible).
    slope_ci : tuple of float or None
        95 % interval of the slope (None when the slope came from a galaxy result).
    slope_from : str
        ``"fit"`` (refitted here), ``"galaxy"`` (given by the caller) or ``"fit failed: ..."``.
    """

    kind = "sae_layer"
    layer: int = 0
    n_features: int = 0
    slope: float | None = None
    slope_ci: tuple[float, float] | None = None
    slope_from: str = "fit"


@dataclass
class SaeGeometry(Result):
    """Slopes per SAE layer and matching between adjacent available layers.

    Attributes
    ----------
    source : str
        The suite's name.
    thresholds : tuple of float
    hist_edges : ndarray
        Bin edges of every ``*_hist`` (cosine from -1 to 1).
    layers : list of SaeLayer
    pairs : list of MatchPair
    """

    kind = "sae_geometry"
    source: str = ""
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    hist_edges: np.ndarray = field(default_factory=lambda: np.linspace(-1.0, 1.0, HIST_BINS + 1))
    layers: list[SaeLayer] = field(default_factory=list)
    pairs: list[MatchPair] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One row per adjacent pair: the matching table (real and null) and the slope of ``layer_b``."""
        slopes = {r.layer: r.slope for r in self.layers}
        out = []
        for p in self.pairs:
            row = {"layer_a": p.layer_a, "layer_b": p.layer_b, "slope_b": slopes.get(p.layer_b)}
            for name, m in (("", p.real), ("null_", p.null)):
                if m is None:
                    continue
                row[f"{name}best_mean"] = m.best_mean
                row[f"{name}assigned_mean"] = m.assigned_mean
                for k, t in enumerate(m.thresholds):
                    row[f"{name}persist@{t:g}"] = m.frac_persist[k]
                    row[f"{name}appear@{t:g}"] = m.frac_appear[k]
                    if m.frac_assigned is not None:
                        row[f"{name}assigned@{t:g}"] = m.frac_assigned[k]
            out.append(row)
        return out


def hist_edges(bins: int = HIST_BINS) -> np.ndarray:
    """Histogram bin edges over cosines, ``linspace(-1, 1, bins + 1)``."""
    return np.linspace(-1.0, 1.0, bins + 1)


def random_rotation(d: int, seed=0) -> np.ndarray:
    """A Haar-random orthogonal ``(d, d)`` matrix (QR of a Gaussian with sign correction).

    Parameters
    ----------
    d : int
    seed : int or numpy Generator, default=0
    """
    rng = resolve_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


def _decoder(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"{name}: expected a (n_features, d_model) decoder matrix. Got shape {x.shape} instead.")
    return unit_rows(x)


def match_features(a: np.ndarray, b: np.ndarray, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   assignment: bool = True, bins: int = HIST_BINS) -> FeatureMatch:
    """Match the decoder rows of layer ``a`` to those of layer ``b`` by cosine.

    Parameters
    ----------
    a : ndarray (n_a, d)
    b : ndarray (n_b, d)
    thresholds : sequence of float, default=(0.3, 0.5, 0.7, 0.9)
    assignment : bool, default=True
        Also solve the one-to-one assignment (``O(n^3)``; seconds for a few thousand rows).
    bins : int, default=40
        Histogram bins over [-1, 1].

    Returns
    -------
    FeatureMatch

    Examples
    --------
    >>> import numpy as np
    >>> a = np.random.default_rng(0).standard_normal((50, 16))
    >>> m = match_features(a, a[::-1], thresholds=(0.5, 0.9))
    >>> m.frac_persist, m.frac_assigned
    ([1.0, 1.0], [1.0, 1.0])
    """
    ua, ub = _decoder(a, "a"), _decoder(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise InputError(f"b: expected d_model {ua.shape[1]} like a. Got {ub.shape[1]} instead.")
    C = ua @ ub.T
    best_ab = C.max(1)
    best_ba = C.max(0)
    edges = hist_edges(bins)
    th = tuple(float(t) for t in thresholds)
    out = FeatureMatch(
        n_a=int(ua.shape[0]), n_b=int(ub.shape[0]), thresholds=th,
        best_mean=float(best_ab.mean()), best_quantiles=np.quantile(best_ab, QUANTILES).tolist(),
        best_ba_mean=float(best_ba.mean()),
        frac_persist=[float((best_ab > t).mean()) for t in th],
        frac_vanish=[float((best_ab <= t).mean()) for t in th],
        frac_appear=[float((best_ba <= t).mean()) for t in th],
        best_hist=np.histogram(best_ab, edges)[0].astype(np.int64),
    )
    if assignment:
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(C, maximize=True)
        v = C[r, c]
        out.assigned_mean = float(v.mean())
        out.assigned_quantiles = np.quantile(v, QUANTILES).tolist()
        out.frac_assigned = [float((v > t).mean()) for t in th]
        out.assigned_hist = np.histogram(v, edges)[0].astype(np.int64)
        out.assignment = c[np.argsort(r)].astype(np.int64) if ua.shape[0] <= ub.shape[0] else None
    return out


def layer_slope(cloud, layer: int | None = None) -> SaeLayer:
    """Galaxy power-law slope of one cloud (covariance eigenspectrum over the default rank window).

    Uses only :func:`featuregeo.tl.galaxy.covariance`, ``eigenspectrum`` and ``fit_power_law``; a
    spectrum too short for the window gives ``slope = None`` with the reason in ``slope_from``.
    """
    from featuregeo.tl.galaxy import covariance, eigenspectrum, fit_power_law

    layer = int(cloud.layer or 0) if layer is None else int(layer)
    cov, n = covariance(cloud)
    ev = eigenspectrum(cov)
    try:
        fit = fit_power_law(ev)
    except InputError as e:
        return SaeLayer(layer=layer, n_features=int(n), slope=None, slope_ci=None,
                        slope_from=f"fit failed: {e}")
    ci = getattr(fit, "slope_ci", None)
    return SaeLayer(layer=layer, n_features=int(n), slope=float(fit.slope),
                    slope_ci=None if ci is None else (float(ci[0]), float(ci[1])), slope_from="fit")


def sae_geometry(suite: Suite, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, null: bool = True,
                 null_assignment: bool = True, slopes: Mapping[int, float] | None = None, seed: int = 0,
                 checkpoint: Checkpoint | None = None, progress: Callable[[str], None] | None = None) -> SaeGeometry:
    """Galaxy slope per layer and feature matching between adjacent available layers of a suite.

    Parameters
    ----------
    suite : Suite
        At least 2 layers.
    thresholds : sequence of float
    null : bool, default=True
        Match ``a`` against a rotated ``b`` too.
    null_assignment : bool, default=True
        Also solve the one-to-one assignment under the null (the slow part for big SAEs).
    slopes : mapping layer -> slope, optional
        Slopes from a galaxy result; other layers are refitted.
    seed : int
        Seeds the rotation (one for all pairs: ``seed_sequence(seed, 11)``).
    checkpoint : Checkpoint, optional
        Each refitted slope (``sae_slope_<L>``) and each pair (``sae_match_<a>_<b>``) is a unit,
        fingerprinted by the clouds' :meth:`~featuregeo.core.data.FeatureCloud.fingerprint` and the
        matching parameters.
    progress : callable, optional

    Returns
    -------
    SaeGeometry
    """
    layers = list(suite.layers)
    if len(layers) < 2:
        raise InputError(f"sae: expected a suite with at least 2 layers. Got layers {layers} instead.")
    th = tuple(float(t) for t in thresholds)
    slopes = dict(slopes or {})
    per_layer: list[SaeLayer] = []
    pairs: list[MatchPair] = []
    prev = None
    rot: list[np.ndarray] = []
    k = min(range(len(th)), key=lambda i: abs(th[i] - 0.5))  # the threshold shown in progress lines

    def rotation(d: int) -> np.ndarray:
        if not rot:
            rot.append(random_rotation(d, seed_sequence(seed, 11)))
        return rot[0]

    for L in layers:
        cloud = suite.load(L)
        cfp = cloud.fingerprint()
        if L in slopes and slopes[L] is not None and math.isfinite(float(slopes[L])):
            per_layer.append(SaeLayer(layer=int(L), n_features=int(cloud.n_features), slope=float(slopes[L]),
                                      slope_ci=None, slope_from="galaxy"))
        else:
            fp = fingerprint("layers.sae_slope", cfp)
            compute = (lambda c=cloud, L=L: layer_slope(c, L))
            per_layer.append(compute() if checkpoint is None
                             else checkpoint.result(f"sae_slope_{L}", fp, compute, SaeLayer))
        if prev is not None:
            La, ca, fa = prev

            def compute_pair(ca=ca, cb=cloud, La=La, Lb=L) -> MatchPair:
                va, vb = ca.vectors, cb.vectors
                m = match_features(va, vb, thresholds=th)
                m.assignment = None
                nm = None
                if null:
                    nm = match_features(va, vb @ rotation(vb.shape[1]), thresholds=th, assignment=null_assignment)
                    nm.assignment = None
                return MatchPair(layer_a=int(La), layer_b=int(Lb), real=m, null=nm)

            fp = fingerprint("layers.sae_match", fa, cfp, th, null, null_assignment, seed, HIST_BINS)
            pair = compute_pair() if checkpoint is None else checkpoint.result(f"sae_match_{La}_{L}", fp, compute_pair,
                                                                               MatchPair)
            pairs.append(pair)
            say(progress, f"layers: SAE matching {La}->{L}: persist@{th[k]:g} {pair.real.frac_persist[k]:.3f}"
                + (f" (null {pair.null.frac_persist[k]:.3f})" if pair.null is not None else ""))
        prev = (L, cloud, cfp)
    return SaeGeometry(source=getattr(suite, "name", ""), thresholds=th, hist_edges=hist_edges(), layers=per_layer,
                       pairs=pairs)
