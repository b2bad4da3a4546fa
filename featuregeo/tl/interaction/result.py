"""The result records of the interaction basis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.tl.interaction.basis import LayerBasis
from featuregeo.tl.interaction.compare import AblationCurve, SaeMatch
from featuregeo.tl.interaction.edges import EdgeSet
from featuregeo.tl.interaction.params import InteractionParams

__all__ = ["InteractionLayer", "InteractionResult"]


@dataclass
class InteractionLayer(Result):
    """One node layer of the section.

    Attributes
    ----------
    layer : int
        Residual stream after this block.
    basis : LayerBasis
        The interaction basis (PCA at the last node layer).
    pca : LayerBasis
        Plain PCA of the same activations, for comparison.
    n_gram, n_interaction, n_pca : int
        Gram rank, interaction-basis dimension, PCA dimension (the retained dimensions).
    m_rel_se : float
        Relative standard error of the stochastic M' (NaN at the last layer or in exact mode).
    ablation : AblationCurve or None
    sae : SaeMatch or None
    """

    kind = "interaction_layer"
    layer: int = 0
    basis: LayerBasis = field(default_factory=LayerBasis)
    pca: LayerBasis = field(default_factory=LayerBasis)
    n_gram: int = 0
    n_interaction: int = 0
    n_pca: int = 0
    m_rel_se: float = float("nan")
    ablation: AblationCurve | None = None
    sae: SaeMatch | None = None


@dataclass
class InteractionResult(Result):
    """The interaction basis of one section of a model (``interaction.json`` + ``.npz`` + ``.csv``).

    Attributes
    ----------
    params : InteractionParams
    model : str
    n_tokens : int
        Token positions behind the Gram matrices and M'.
    layers : list of InteractionLayer
        One per node layer, in order.
    edges : list of EdgeSet
        Interaction-basis edges between adjacent node layers (top ``edge_directions``).
    pca_edges : list of EdgeSet
        The same edges in the PCA bases.
    baseline_loss : float
        Held-out loss of the unmodified model (nats/token; NaN without the ablation curve).
    timings : dict str -> float
        Seconds per stage (``activations``, ``basis``, ``edges``, ``ablation``, ``sae``; not compared).
    seconds : float
        Wall time (not compared).
    """

    kind = "interaction"
    params: InteractionParams = field(default_factory=InteractionParams)
    model: str = ""
    n_tokens: int = 0
    layers: list[InteractionLayer] = field(default_factory=list)
    edges: list[EdgeSet] = field(default_factory=list)
    pca_edges: list[EdgeSet] = field(default_factory=list)
    baseline_loss: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    seconds: float = field(default=0.0, compare=False)

    def layer(self, layer: int) -> InteractionLayer:
        """The record of node layer ``layer``; InputError naming the section otherwise."""
        for r in self.layers:
            if r.layer == layer:
                return r
        raise InputError(f"layer: expected one of {[r.layer for r in self.layers]}. Got {layer!r} instead.")

    def rows(self) -> list[dict[str, Any]]:
        """One row per node layer: dimensions, M' error, outgoing edge sparsity, SAE medians, ablation."""
        out = []
        e_in = {e.layer_in: e for e in self.edges}
        p_in = {e.layer_in: e for e in self.pca_edges}
        for r in self.layers:
            row: dict[str, Any] = {"layer": r.layer, "method": r.basis.method, "n_gram": r.n_gram,
                                   "n_interaction": r.n_interaction, "n_pca": r.n_pca, "m_rel_se": r.m_rel_se,
                                   "top_importance": float(r.basis.importance[0]) if r.basis.n_kept else None}
            e, p = e_in.get(r.layer), p_in.get(r.layer)
            row["edge_top1_interaction"] = e.top1_mass if e is not None else None
            row["edge_top1_pca"] = p.top1_mass if p is not None else None
            if r.sae is not None:
                row.update(sae_median_interaction=r.sae.median_interaction, sae_median_pca=r.sae.median_pca,
                           sae_median_random=r.sae.median_random)
            if r.ablation is not None and r.ablation.n:
                a = r.ablation
                row.update(ablation_n=a.n[0], loss_interaction=a.loss_interaction[0], loss_pca=a.loss_pca[0])
            out.append(row)
        return out

    def basis_arrays(self, layer: int) -> dict[str, np.ndarray]:
        """What ``basis_L<layer>.npz`` holds: ``C``, ``P``, ``importance``, ``gram_eigenvalues``,
        ``m_eigenvalues`` and the PCA basis ``pca_U``, ``pca_eigenvalues`` (float64)."""
        r = self.layer(layer)
        b, p = r.basis, r.pca
        return {"C": b.C, "P": b.P, "importance": b.importance, "gram_eigenvalues": b.gram_eigenvalues,
                "m_eigenvalues": b.m_eigenvalues, "pca_U": p.C, "pca_eigenvalues": p.importance,
                "layer": np.array(layer), "d": np.array(b.d)}
