"""Result records of the layer-update analysis."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.tl.layers.heldout import HeldoutRows
from featuregeo.tl.updates.params import UpdatesParams

__all__ = ["UpdateFit", "UpdateFunction", "UpdatesLayer", "UpdatesResult"]

NAN = float("nan")


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


@dataclass
class UpdateFit(Result):
    """Geometry of one tokenwise split ``D = T + R`` of one transition.

    Attributes
    ----------
    target : str
        ``"update"`` (the block's whole update ``h_{l+1} - h_l``), ``"attn"`` (its attention sub-layer
        update, fitted from the block input ``h_l``) or ``"mlp"`` (its MLP sub-layer update, fitted from
        the MLP's own input ``h_l + attn``: tokenwise by construction).
    cls : str
        ``diag``, ``lowrank`` or ``global``.
    neighbours : str
        ``knn`` (nearest tokens of other rows), ``shuffled`` (random tokens of other rows) or ``none`` (global).
    k, rank : int
        Neighbours and rank used (0 where not applicable).
    energy_share : float
        ``sum |T|^2 / sum |D|^2`` (pooled over tokens; dimensionless).
    explained : float
        ``1 - sum |R|^2 / sum |D|^2`` (can be negative when ``T`` overshoots).
    cos_dt, cos_dr : float
        Mean over tokens of ``cos(D, T)`` and ``cos(D, R)``.
    angle_dt, angle_dr : float
        Mean angles between ``D`` and ``T``, ``D`` and ``R`` (degrees).
    proj_t, proj_r : float
        Mean fraction of ``|T|^2`` / ``|R|^2`` inside the dominant tokenwise subspace (cross-fitted).
    subspace_dim : float
        Dimension of that subspace (mean over the two halves).
    chance : float
        ``subspace_dim / d``: the projection of a random direction.
    rel_error : float
        Median over tokens of ``|R| / |D|``.
    """

    kind = "update_fit"
    target: str = "update"
    cls: str = ""
    neighbours: str = "knn"
    k: int = 0
    rank: int = 0
    energy_share: float = NAN
    explained: float = NAN
    cos_dt: float = NAN
    cos_dr: float = NAN
    angle_dt: float = NAN
    angle_dr: float = NAN
    proj_t: float = NAN
    proj_r: float = NAN
    subspace_dim: float = NAN
    chance: float = NAN
    rel_error: float = NAN


@dataclass
class UpdateFunction(Result):
    """Output perturbation from replacing one position's update by its tokenwise part.

    For each patched sample (row, position): the block's output at that position becomes
    ``h_l + T`` (i.e. the residual ``R`` is removed), the forward pass continues, and the KL
    divergence ``KL(p_clean || p_patched)`` of the final next-token distribution *at that position* is
    recorded (nats).

    Attributes
    ----------
    cls : str
        The class whose ``T`` was patched in.
    n : int
        Samples (rows x positions).
    kl_mean, kl_median : float
        Of the KL (nats).
    spearman, spearman_ci : float, list of float
        Spearman correlation of ``|R|`` with the KL, and its 95 % bootstrap interval (rows resampled).
    spearman_rel, spearman_rel_ci : float, list of float
        The same for the relative error ``|R| / |D|``.
    spearman_norm, spearman_norm_ci : float, list of float
        The same for ``|D|`` (a control: how much of the correlation update size alone gives).
    kl, r_norm, d_norm : ndarray [n]
        Per sample: KL (nats), ``|R|``, ``|D|``.
    rows, positions : ndarray [n] of int
        Row and position (BOS = 0) of each sample.
    """

    kind = "update_function"
    cls: str = ""
    n: int = 0
    kl_mean: float = NAN
    kl_median: float = NAN
    spearman: float = NAN
    spearman_ci: list[float] = field(default_factory=list)
    spearman_rel: float = NAN
    spearman_rel_ci: list[float] = field(default_factory=list)
    spearman_norm: float = NAN
    spearman_norm_ci: list[float] = field(default_factory=list)
    kl: np.ndarray = field(default_factory=_empty)
    r_norm: np.ndarray = field(default_factory=_empty)
    d_norm: np.ndarray = field(default_factory=_empty)
    rows: np.ndarray = field(default_factory=_empty)
    positions: np.ndarray = field(default_factory=_empty)


@dataclass
class UpdatesLayer(Result):
    """One transition ``l -> l + 1`` (the update written by block ``l + 1``).

    Attributes
    ----------
    layer : int
        ``l``; ``h_l`` is the output of block ``l``.
    block : int
        ``l + 1``, the block whose update is analysed.
    n_tokens : int
    d_norm, h_norm : float
        Mean ``|D|`` and mean ``|h_l|`` over tokens (residual-stream units).
    fits : list of UpdateFit
        The whole update under each class (nearest neighbours, ``k`` and ``rank`` of the params).
    controls : list of UpdateFit
        The primary class on the attention update, the MLP update, and the whole update with shuffled
        neighbours.
    sensitivity : list of UpdateFit
        The local classes on the whole update for each ``k`` of ``k_grid`` and each rank of ``rank_grid``.
    function : list of UpdateFunction
        One per class of ``kl_classes``.
    seconds : float
        Wall time (not compared).
    """

    kind = "updates_layer"
    layer: int = 0
    block: int = 0
    n_tokens: int = 0
    d_norm: float = NAN
    h_norm: float = NAN
    fits: list[UpdateFit] = field(default_factory=list)
    controls: list[UpdateFit] = field(default_factory=list)
    sensitivity: list[UpdateFit] = field(default_factory=list)
    function: list[UpdateFunction] = field(default_factory=list)
    seconds: float = field(default=0.0, compare=False)

    def fit(self, cls: str, target: str = "update", neighbours: str | None = None) -> UpdateFit:
        """The fit of ``cls`` on ``target`` (main fits first, then controls); InputError if absent."""
        for f in self.fits + self.controls:
            if f.cls == cls and f.target == target and (neighbours is None or f.neighbours == neighbours):
                return f
        raise InputError(f"cls: no {cls!r} fit of {target!r} at layer {self.layer}; expected one of "
                         f"{sorted({(f.cls, f.target) for f in self.fits + self.controls})}")

    def func(self, cls: str) -> UpdateFunction | None:
        return next((f for f in self.function if f.cls == cls), None)


def _r(x: Any, nd: int = 4) -> Any:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


@dataclass
class UpdatesResult(Result):
    """Layer-update geometry of one model (``updates.json`` + ``updates.npz`` + ``updates.csv``).

    Attributes
    ----------
    params : UpdatesParams
    model : str
    d_model : int
    data : HeldoutRows
        The held-out token rows read (``data.rows``: [n_rows, 1 + seq_len]).
    positions : list of int
        Patched positions (BOS = 0), the same in every row and transition.
    layers : list of UpdatesLayer
    seconds : float
        Wall time (not compared).
    """

    kind = "updates"
    params: UpdatesParams = field(default_factory=UpdatesParams)
    model: str = ""
    d_model: int = 0
    data: HeldoutRows = field(default_factory=HeldoutRows)
    positions: list[int] = field(default_factory=list)
    layers: list[UpdatesLayer] = field(default_factory=list)
    seconds: float = field(default=0.0, compare=False)

    def layer(self, layer: int) -> UpdatesLayer:
        for rec in self.layers:
            if rec.layer == layer:
                return rec
        raise InputError(f"layer: expected one of {[r.layer for r in self.layers]}. Got {layer!r} instead.")

    def rows(self) -> list[dict[str, Any]]:
        """One row per transition: each class's geometry, the controls (primary class) and the function part."""
        p = self.params
        out = []
        for rec in self.layers:
            row: dict[str, Any] = {"layer": rec.layer, "block": rec.block, "d_norm": _r(rec.d_norm, 2)}
            for f in rec.fits:
                for key in ("explained", "energy_share", "cos_dt", "cos_dr", "angle_dt", "angle_dr", "proj_t",
                            "proj_r", "subspace_dim"):
                    row[f"{f.cls}.{key}"] = _r(getattr(f, key))
            for f in rec.controls:
                name = f.target if f.neighbours == "knn" else f.neighbours
                row[f"{name}.explained"] = _r(f.explained)
                row[f"{name}.cos_dt"] = _r(f.cos_dt)
            for fn in rec.function:
                row[f"{fn.cls}.spearman"] = _r(fn.spearman, 3)
                lo, hi = (fn.spearman_ci + [None, None])[:2]
                row[f"{fn.cls}.spearman_lo"], row[f"{fn.cls}.spearman_hi"] = _r(lo, 3), _r(hi, 3)
                row[f"{fn.cls}.spearman_norm"] = _r(fn.spearman_norm, 3)
                row[f"{fn.cls}.kl_median"] = _r(fn.kl_median, 5)
            row["primary"] = p.primary
            out.append(row)
        return out
