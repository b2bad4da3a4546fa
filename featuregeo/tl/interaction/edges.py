"""Edges between adjacent layers' basis directions: integrated gradients, the squared formula.

For input feature ``j`` of node layer ``l`` and output feature ``i`` of node layer ``l+1``
(METHODS.md section 3, the "squared" edge of Bushnaq et al.)::

    E_ij = mean over rows and output positions t of
           ( sum_s  integral_0^1  d f^'_{i,t}(a f~) / d f^_{j,s}  *  f^_{j,s}  da )^2

The path scales the whole input ``f~`` (the folded constant too, so biases scale with it).  The
derivative with respect to the feature coordinate ``f^_j`` is the derivative along its direction
``P[:, j]``, so the inner sum over input positions is one Jacobian-vector product with the tangent
``P[:, j] * f^_{j,s}`` at every position ``s``: ``k_in`` forward-mode products per integration step
give all output features at all output positions at once (torch.func.jvp, vmapped over ``j``).
The integral uses the midpoint rule with ``steps`` nodes (never evaluating at ``a = 0``, where a
normalisation layer is singular).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from featuregeo.core.results import Result
from featuregeo.tl.interaction.basis import LayerBasis, Step, extend, torch_dtype_of

__all__ = ["EdgeSet", "Convergence", "edge_matrix", "top_fraction", "convergence"]


@dataclass
class Convergence(Result):
    """How the edges change with the number of integration steps (on a few rows).

    Attributes
    ----------
    steps : list of int
    rel_change : list of float
        ``||E(steps) - E(max steps)||_F / ||E(max steps)||_F`` (0 at the largest step count).
    total : list of float
        Sum of all edges at each step count.
    n_rows : int
        Rows used.
    """

    kind = "edge_convergence"
    steps: list[int] = field(default_factory=list)
    rel_change: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    n_rows: int = 0


@dataclass
class EdgeSet(Result):
    """Edges between the top directions of node layers ``layer_in`` and ``layer_out`` in one basis.

    Attributes
    ----------
    layer_in, layer_out : int
    method : str
        ``"interaction"`` or ``"pca"``.
    edges : ndarray [n_out, n_in], float64
        ``E_ij`` (squared units of the output feature).
    steps : int
        Integration steps.
    n_rows, n_tokens : int
        Rows and output positions averaged over.
    top1_mass : float
        Fraction of the total edge mass in the largest 1 % of edges (at least one edge).
    convergence : Convergence or None
    """

    kind = "edge_set"
    layer_in: int = 0
    layer_out: int = 0
    method: str = "interaction"
    edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    steps: int = 0
    n_rows: int = 0
    n_tokens: int = 0
    top1_mass: float = float("nan")
    convergence: Convergence | None = None


def top_fraction(edges: np.ndarray, fraction: float = 0.01) -> float:
    """Fraction of the total of ``edges`` (non-negative) held by the largest ``fraction`` of entries."""
    e = np.sort(np.asarray(edges, dtype=np.float64).ravel())[::-1]
    if e.size == 0 or e.sum() <= 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * e.size)))
    return float(e[:k].sum() / e.sum())


def edge_matrix(acts: np.ndarray, step: Step, basis_in: LayerBasis, basis_out: LayerBasis, *, n_in: int, n_out: int,
                steps: int = 8, batch_size: int = 4, dtype: str = "float64", chunk: int = 8,
                progress: Callable | None = None) -> np.ndarray:
    """The squared integrated-gradient edges ``[n_out, n_in]`` (see the module docstring).

    Parameters
    ----------
    acts : ndarray [rows, T, d_in]
        Activations of node layer ``l``.
    step : callable
        ``step(x, c)`` from node layer ``l`` to ``l+1``.
    basis_in, basis_out : LayerBasis
    n_in, n_out : int
        Top directions on each side (clipped to the bases' dimensions).
    steps : int
        Midpoint-rule nodes on [0, 1].
    chunk : int
        Input directions per vmapped Jacobian-vector product.
    """
    import torch
    from torch.func import jvp, vmap

    tdt = torch_dtype_of(dtype)
    n_in = min(n_in, basis_in.n_kept)
    n_out = min(n_out, basis_out.n_kept)
    Cin = torch.as_tensor(basis_in.C[:, :n_in], dtype=tdt)
    Pin = torch.as_tensor(basis_in.P[:, :n_in], dtype=tdt)
    Cout = torch.as_tensor(basis_out.C[:, :n_out], dtype=tdt)

    def g(ft):
        y = step(ft[..., :-1], ft[..., -1:])
        return torch.cat([y, ft[..., -1:]], dim=-1) @ Cout

    alphas = (np.arange(steps) + 0.5) / steps
    acts = np.asarray(acts)
    rows = acts.shape[0]
    E = np.zeros((n_out, n_in))
    count = 0
    for r in range(0, rows, batch_size):
        x = extend(torch.as_tensor(acts[r:r + batch_size], dtype=tdt))  # [b, T, d+1]
        fh = x @ Cin  # [b, T, n_in]
        b, T, _ = fh.shape
        A = torch.zeros((n_in, b, T, n_out), dtype=tdt)
        for j0 in range(0, n_in, chunk):
            js = torch.arange(j0, min(j0 + chunk, n_in))
            # tangent of direction j: P[:, j] * f^_j at every position
            tang = fh[..., js].permute(2, 0, 1)[..., None] * Pin[:, js].T[:, None, None, :]
            for a in alphas:
                xa = float(a) * x
                _, dh = vmap(lambda v: jvp(g, (xa,), (v,)))(tang)
                A[js] += dh.detach() / steps
        E += (A.to(torch.float64) ** 2).sum(dim=(1, 2)).numpy().T
        count += b * T
        if progress is not None:
            progress(f"  edges {basis_in.layer}->{basis_out.layer} ({basis_in.method}): rows {r + b}/{rows}")
    return E / count


def convergence(acts: np.ndarray, step: Step, basis_in: LayerBasis, basis_out: LayerBasis, *, n_in: int, n_out: int,
                step_counts, batch_size: int = 4, dtype: str = "float64") -> Convergence:
    """Edges at each of ``step_counts`` on ``acts`` and their relative change against the largest count."""
    mats = [edge_matrix(acts, step, basis_in, basis_out, n_in=n_in, n_out=n_out, steps=int(s), batch_size=batch_size,
                        dtype=dtype) for s in step_counts]
    ref = mats[-1]
    den = max(float(np.linalg.norm(ref)), 1e-300)
    return Convergence(steps=[int(s) for s in step_counts],
                       rel_change=[float(np.linalg.norm(m - ref) / den) for m in mats],
                       total=[float(m.sum()) for m in mats], n_rows=int(np.asarray(acts).shape[0]))
