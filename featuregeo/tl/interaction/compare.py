"""Comparisons of a basis: held-out loss when keeping only its top directions, and SAE decoder cosines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featuregeo.core.results import Result
from featuregeo.tl.interaction.basis import LayerBasis

__all__ = ["AblationCurve", "SaeMatch", "best_cosines", "sae_match", "clip_ns"]


@dataclass
class AblationCurve(Result):
    """Held-out next-token loss when the residual after block ``layer`` keeps only its top ``n`` directions.

    Attributes
    ----------
    layer : int
    n : list of int
        Kept directions (clipped to each basis' dimension; the same list for both bases).
    loss_interaction, loss_pca : list of float
        Loss in nats/token keeping the top ``n`` interaction-basis / PCA directions
        (``f -> P_n C_n^T [f, 1]``; for PCA ``U_n U_n^T [f, 1]``).
    baseline : float
        Loss of the unmodified model on the same rows.
    n_tokens : int
        Predicted positions.
    """

    kind = "ablation_curve"
    layer: int = 0
    n: list[int] = field(default_factory=list)
    loss_interaction: list[float] = field(default_factory=list)
    loss_pca: list[float] = field(default_factory=list)
    baseline: float = float("nan")
    n_tokens: int = 0


@dataclass
class SaeMatch(Result):
    """Best |cosine| of each top basis direction to the SAE decoder rows of the same layer.

    Attributes
    ----------
    layer : int
    n_sae : int
        Decoder rows compared.
    interaction, pca, random : ndarray [n], float64
        Best |cos| of each of the top ``n`` directions (``P`` columns) of the interaction basis, of
        PCA, and of ``n`` seeded Gaussian directions (the null).
    median_interaction, median_pca, median_random : float
    """

    kind = "sae_match"
    layer: int = 0
    n_sae: int = 0
    interaction: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pca: np.ndarray = field(default_factory=lambda: np.zeros(0))
    random: np.ndarray = field(default_factory=lambda: np.zeros(0))
    median_interaction: float = float("nan")
    median_pca: float = float("nan")
    median_random: float = float("nan")


def clip_ns(ns, *dims: int) -> list[int]:
    """``ns`` clipped to the smallest of ``dims``, de-duplicated, increasing."""
    top = min(dims)
    return sorted({min(int(n), top) for n in ns})


def best_cosines(directions: np.ndarray, rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """For each of ``directions`` ``[n, d]``, the largest |cosine| to any of ``rows`` ``[m, d]``."""
    u = np.asarray(directions, dtype=np.float64)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300)
    best = np.zeros(len(u))
    for i in range(0, len(rows), chunk):
        w = np.asarray(rows[i:i + chunk], dtype=np.float64)
        w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-300)
        best = np.maximum(best, np.max(np.abs(u @ w.T), axis=1))
    return best


def sae_match(layer: int, basis: LayerBasis, pca: LayerBasis, decoder: np.ndarray, n: int, seed: int = 0) -> SaeMatch:
    """:class:`SaeMatch` of the top ``n`` directions of ``basis`` and ``pca`` against ``decoder`` ``[m, d]``."""
    n = min(n, basis.n_kept, pca.n_kept)
    rng = np.random.default_rng(seed)
    a = best_cosines(basis.directions(n), decoder)
    b = best_cosines(pca.directions(n), decoder)
    r = best_cosines(rng.normal(size=(n, basis.d)), decoder)
    return SaeMatch(layer=layer, n_sae=int(len(decoder)), interaction=a, pca=b, random=r,
                    median_interaction=float(np.median(a)), median_pca=float(np.median(b)),
                    median_random=float(np.median(r)))
