"""Edges between adjacent layers' basis directions: integrated gradients, the squared formula.

For input feature ``j`` of node layer ``l`` and output feature ``i`` of node layer ``l+1``
(METHODS.md section 3, the "squared" edge of Bushnaq et al.)::

    E_ij = mean over rows and output positions t of
           ( sum_s  integral_0^1  d f^'_{i,t}(b~ + a (f~ - b~)) / d f^_{j,s}  *  (f^_{j,s} - b^_j)  da )^2

along the straight path from a baseline ``b~`` to the data point ``f~``.

**Baselines.**  ``b~ = 0`` (``baseline=None``) is the formula as written in METHODS.md: the whole
input ``f~`` is scaled, the folded constant too.  It is ill-posed behind a normalisation layer: an
RMSNorm'd branch ``h(x)`` is scale invariant, so its gradient at ``a x`` is ``grad h(x) / a`` and each
attribution ``integral_0 (1/a) g_j da`` diverges logarithmically (the attributions still sum to the
finite ``h(x) - h(0)`` because ``sum_j g_j = 0``, Euler's theorem): the squared edges then measure how
close to ``a = 0`` the quadrature reaches (ultimately the norm's epsilon), not the data.  The mean
baseline ``b~ = [E f, 1]`` (``baseline=mean``) keeps the path away from the origin wherever the mean is
not small against the spread (true of a transformer's residual stream, dominated by a few massive
directions), the integrand is smooth and the integral converges; it attributes the output's change
from the mean input, ``f^'(f) - f^'(mean)``, to the features' deviations from their means, and the
folded constant is not scaled (biases are held fixed).  Both are invariant under the
reparameterisations that leave the features unchanged.

**Cost.**  The derivative with respect to feature coordinate ``f^_j`` is the derivative along its
direction ``P[:, j]``, so the inner sum over input positions is one Jacobian-vector product with the
tangent ``P[:, j] * (f^_{j,s} - b^_j)`` at every position ``s``: ``k_in`` forward-mode products per
quadrature node give all output features at all output positions at once.  One pass evaluates a
chunk of directions (``torch.func.vmap`` over tangents) at several quadrature nodes stacked into the
batch, so the primal pass at each node is shared by all directions of the chunk.

**Quadrature.**  Gauss-Legendre (``rule="gauss"``, exact for polynomials of degree ``2 n - 1``) or the
midpoint rule on ``[0, 1]``; neither evaluates the end points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.tl.interaction.basis import LayerBasis, Step, extend, torch_dtype_of

__all__ = ["EdgeSet", "Convergence", "edge_matrix", "top_fraction", "convergence", "quadrature", "RULES",
           "BASELINES"]

RULES = ("gauss", "midpoint")
BASELINES = ("mean", "zero")
#: token-tangent rows per vmapped pass (directions x nodes x rows x positions): bounds the memory
PASS_ROWS = 32768


@dataclass
class Convergence(Result):
    """How the edges change with the number of quadrature nodes (on a few rows).

    Attributes
    ----------
    steps : list of int
    rel_change : list of float
        ``||E(steps) - E(max steps)||_F / ||E(max steps)||_F`` (0 at the largest step count).
    total : list of float
        Sum of all edges at each step count.
    n_rows : int
        Rows used.
    rule, baseline : str
        Quadrature rule and path baseline (see the module docstring).
    """

    kind = "edge_convergence"
    steps: list[int] = field(default_factory=list)
    rel_change: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    n_rows: int = 0
    rule: str = "midpoint"
    baseline: str = "zero"


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
        Quadrature nodes.
    n_rows, n_tokens : int
        Rows and output positions averaged over.
    top1_mass : float
        Fraction of the total edge mass in the largest 1 % of edges (at least one edge).
    convergence : Convergence or None
    rule, baseline : str
        Quadrature rule and path baseline.
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
    rule: str = "midpoint"
    baseline: str = "zero"


def top_fraction(edges: np.ndarray, fraction: float = 0.01) -> float:
    """Fraction of the total of ``edges`` (non-negative) held by the largest ``fraction`` of entries."""
    e = np.sort(np.asarray(edges, dtype=np.float64).ravel())[::-1]
    if e.size == 0 or e.sum() <= 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * e.size)))
    return float(e[:k].sum() / e.sum())


def quadrature(steps: int, rule: str = "gauss") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of an ``steps``-node rule on ``[0, 1]`` (weights sum to 1)."""
    if rule == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(int(steps))
        return (x + 1.0) / 2.0, w / 2.0
    raise InputError(f"rule: expected one of {RULES}. Got {rule!r} instead.")


def _check_baseline(baseline, d: int):
    if baseline is None:
        return None
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (d,):
        raise InputError(f"baseline: expected None or an activation of shape ({d},). Got shape {b.shape} instead.")
    return b


_COMPILED: dict = {}


def _push_eager(step, pts, tg, Cout):
    import torch
    from torch.func import jvp, vmap

    def g(ft):
        y = step(ft[..., :-1], ft[..., -1:])
        return torch.cat([y, ft[..., -1:]], dim=-1) @ Cout

    return vmap(lambda v: jvp(g, (pts,), (v,))[1])(tg).detach()


def _pusher(step, compiled: bool) -> Callable:
    """``push(pts, tangents, Cout)``: the vmapped JVPs of ``C_out^T [step(x, c), c]`` at ``pts``."""
    if not compiled:
        return lambda pts, tg, Cout: _push_eager(step, pts, tg, Cout)
    import functools
    import warnings

    import torch

    key = id(step)
    if key not in _COMPILED or _COMPILED[key][0] is not step:
        _COMPILED.clear()  # one step function at a time: the compiled graphs hold its weights
        _COMPILED[key] = (step, torch.compile(functools.partial(_push_eager, step), dynamic=False), [True])
    _, fn, ok = _COMPILED[key]

    def push(pts, tg, Cout):
        if ok[0]:
            try:
                return fn(pts, tg, Cout)
            except Exception as e:  # noqa: BLE001 - any compiler failure: the eager path is exact
                ok[0] = False
                warnings.warn(f"edges: torch.compile failed ({type(e).__name__}: {e}); using eager mode",
                              stacklevel=2)
        return _push_eager(step, pts, tg, Cout)

    return push


def edge_matrix(acts: np.ndarray, step: Step, basis_in: LayerBasis, basis_out: LayerBasis, *, n_in: int, n_out: int,
                steps: int = 4, rule: str = "gauss", baseline: np.ndarray | None = None, batch_size: int = 4,
                dtype: str = "float64", chunk: int = 8, pass_rows: int = PASS_ROWS, compiled: bool = False,
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
        Quadrature nodes on [0, 1].
    rule : {"gauss", "midpoint"}
    baseline : ndarray [d_in] or None
        The path's start ``b`` (``[b, 1]`` with the constant); None: the origin, constant scaled too.
    batch_size : int
        Rows per pass.
    chunk : int
        Input directions per vmapped Jacobian-vector product.
    pass_rows : int
        At most this many token-tangent rows (directions x nodes x rows x positions) in one pass:
        the quadrature nodes are split into groups to respect it.
    compiled : bool
        Run the vmapped Jacobian-vector product through ``torch.compile`` (one compilation per step
        function and pass shape, reused by later calls; ~2x faster on a Gemma block on CPU, falls
        back to eager mode with a warning if compilation fails).  Keep the pass shape fixed
        (``rows`` a multiple of ``batch_size``, ``n_in`` of ``chunk``) to avoid recompiling.
    """
    import torch

    tdt = torch_dtype_of(dtype)
    acts = np.asarray(acts)
    rows, T, d = acts.shape
    base = _check_baseline(baseline, d)
    n_in = min(n_in, basis_in.n_kept)
    n_out = min(n_out, basis_out.n_kept)
    Cin = torch.as_tensor(basis_in.C[:, :n_in], dtype=tdt)
    Pin = torch.as_tensor(basis_in.P[:, :n_in], dtype=tdt)
    Cout = torch.as_tensor(basis_out.C[:, :n_out], dtype=tdt)
    b0 = torch.zeros(d + 1, dtype=tdt) if base is None else extend(torch.as_tensor(base, dtype=tdt))

    push = _pusher(step, compiled)
    nodes, weights = quadrature(steps, rule)
    E = np.zeros((n_out, n_in))
    count = 0
    for r in range(0, rows, batch_size):
        x = extend(torch.as_tensor(acts[r:r + batch_size], dtype=tdt))  # [b, T, d+1]
        delta = x - b0
        fh = delta @ Cin  # [b, T, n_in]: the features' change along the path
        b = x.shape[0]
        A = torch.zeros((n_in, b, T, n_out), dtype=tdt)
        for j0 in range(0, n_in, chunk):
            js = torch.arange(j0, min(j0 + chunk, n_in))
            # tangent of direction j: P[:, j] * (f^_j - b^_j) at every position
            tang = fh[..., js].permute(2, 0, 1)[..., None] * Pin[:, js].T[:, None, None, :]  # [c, b, T, d+1]
            group = max(1, pass_rows // max(1, len(js) * b * T))
            for k0 in range(0, len(nodes), group):
                a = torch.as_tensor(nodes[k0:k0 + group], dtype=tdt)
                w = torch.as_tensor(weights[k0:k0 + group], dtype=tdt)
                m = len(a)
                pts = (b0 + a[:, None, None, None] * delta).reshape(m * b, T, d + 1)
                tg = tang.unsqueeze(1).expand(-1, m, -1, -1, -1).reshape(len(js), m * b, T, d + 1)
                dh = push(pts, tg, Cout)  # [c, m*b, T, n_out]
                A[js] += torch.einsum("k,ckbto->cbto", w, dh.detach().reshape(len(js), m, b, T, n_out))
        E += (A.to(torch.float64) ** 2).sum(dim=(1, 2)).numpy().T
        count += b * T
        if progress is not None and (r + b >= rows or (r // batch_size) % max(1, rows // batch_size // 8) == 0):
            progress(f"  edges {basis_in.layer}->{basis_out.layer} ({basis_in.method}): rows {r + b}/{rows}")
    return E / count


def convergence(acts: np.ndarray, step: Step, basis_in: LayerBasis, basis_out: LayerBasis, *, n_in: int, n_out: int,
                step_counts, rule: str = "gauss", baseline: np.ndarray | None = None, batch_size: int = 4,
                dtype: str = "float64", chunk: int = 8) -> Convergence:
    """Edges at each of ``step_counts`` on ``acts`` and their relative change against the largest count."""
    mats = [edge_matrix(acts, step, basis_in, basis_out, n_in=n_in, n_out=n_out, steps=int(s), rule=rule,
                        baseline=baseline, batch_size=batch_size, dtype=dtype, chunk=chunk) for s in step_counts]
    ref = mats[-1]
    den = max(float(np.linalg.norm(ref)), 1e-300)
    return Convergence(steps=[int(s) for s in step_counts],
                       rel_change=[float(np.linalg.norm(m - ref) / den) for m in mats],
                       total=[float(m.sum()) for m in mats], n_rows=int(np.asarray(acts).shape[0]), rule=rule,
                       baseline="zero" if baseline is None else "mean")
