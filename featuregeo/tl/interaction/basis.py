"""The interaction basis of a section of node layers (Bushnaq et al. 2024), from arrays and step functions.

Notation (METHODS.md section 3).  ``f`` is a node layer's activation at one position, ``f~ = [f, 1]``
the same with the bias folded in as a constant coordinate.  For each node layer ``l``:

1. ``G = E[f~ f~^T] = U D U^T`` (float64); eigenvalues below ``gram_threshold * max`` are dropped.
2. ``M' = E[J^T J]``, ``J`` the Jacobian of the next node layer's basis coordinates
   ``f^_{l+1} = C_{l+1}^T f~_{l+1}`` with respect to ``f~_l``, over output coordinates and output
   positions; the expectation runs over rows and input positions.  Estimated with random +-1
   vector-Jacobian products (``E[r r^T] = I``), or exactly with one product per output coordinate.
3. ``M = D^{1/2} U^T M' U D^{1/2} = V L V^T``; eigenvalues below ``m_threshold * max`` are dropped;
   ``C = U D^{-1/2} V L^{1/2}``.  Features are ``C^T f~`` (their second moment is exactly ``L``);
   ``P = U D^{1/2} V L^{-1/2}`` reconstructs ``f~ ~ P C^T f~`` and its columns are the directions in
   activation space.  The last node layer uses plain (uncentred, bias-folded) PCA: ``C = P = U``.

The bases are computed from the last node layer backwards.  A *step* is a differentiable torch
function ``step(x, c) -> y`` from node layer ``l`` (``x``: ``[rows, T, d_l]``) to ``l+1``; ``c``
(``[rows, T, 1]``) is the folded constant, by which the step multiplies its biases (a step without
biases ignores it).  The constant itself is passed on unchanged: ``f~_{l+1} = [step(x, c), c]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result

__all__ = ["Step", "LayerBasis", "extend", "gram_matrix", "eig_desc", "m_prime", "basis_from_m", "pca_basis",
           "build_bases", "torch_dtype_of"]

Step = Callable  # step(x: Tensor[rows, T, d_l], c: Tensor[rows, T, 1]) -> Tensor[rows, T, d_{l+1}]


def _empty() -> np.ndarray:
    return np.zeros((0, 0))


@dataclass
class LayerBasis(Result):
    """The basis of one node layer (also written as ``basis_L<layer>.npz`` by the pipeline).

    Attributes
    ----------
    layer : int
        Node layer (residual stream after this block).
    method : str
        ``"interaction"`` or ``"pca"`` (the last layer of a section, and the comparison).
    d : int
        Activation dimension (the folded constant makes ``d + 1``).
    n_tokens : int
        Token positions averaged over.
    gram_eigenvalues : ndarray [d + 1], float64
        All eigenvalues of G, descending (squared activation units).
    n_gram : int
        Kept Gram eigenvalues (= the PCA basis dimension).
    m_eigenvalues : ndarray [n_gram], float64
        All eigenvalues of M, descending (empty for PCA).
    n_kept : int
        Basis dimension: kept eigenvalues of M (interaction) or of G (PCA).
    importance : ndarray [n_kept], float64
        Second moment of each feature, E[(C^T f~)_j^2]: ``L`` (interaction) or ``D`` (PCA).
    C : ndarray [d + 1, n_kept], float64
        Reads features: ``f^ = C^T f~``.
    P : ndarray [d + 1, n_kept], float64
        Writes them back: ``f~ ~ P f^`` (``C^T P = I``); the columns are the directions in activation space.
    m_rel_se : float
        Relative standard error of the stochastic M' (Frobenius norm, over sources); NaN when exact or PCA.
    jacobian : str
        ``"stochastic"``, ``"exact"`` or ``"none"`` (PCA).
    """

    kind = "layer_basis"
    layer: int = 0
    method: str = "interaction"
    d: int = 0
    n_tokens: int = 0
    gram_eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_gram: int = 0
    m_eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_kept: int = 0
    importance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    C: np.ndarray = field(default_factory=_empty)
    P: np.ndarray = field(default_factory=_empty)
    m_rel_se: float = float("nan")
    jacobian: str = "none"

    def features(self, acts: np.ndarray) -> np.ndarray:
        """Feature coordinates ``C^T [f, 1]`` of activations ``[..., d]`` (float64)."""
        return extend(np.asarray(acts, dtype=np.float64)) @ self.C

    def directions(self, n: int | None = None) -> np.ndarray:
        """Unit directions in activation space of the top ``n`` features, ``[n, d]`` (rows of ``P[:d]``)."""
        v = self.P[: self.d, : (self.n_kept if n is None else min(n, self.n_kept))].T
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)

    def keep_top(self, n: int) -> np.ndarray:
        """The affine map ``[d, d + 1]`` that keeps the top ``n`` features: ``f -> (P_n C_n^T [f, 1])[:d]``."""
        n = min(int(n), self.n_kept)
        return (self.P[:, :n] @ self.C[:, :n].T)[: self.d]


def extend(x, c: float = 1.0):
    """Append the folded constant: ``[..., d] -> [..., d + 1]`` (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.full(x.shape[:-1] + (1,), c, dtype=x.dtype)], axis=-1)
    import torch

    return torch.cat([x, torch.full(x.shape[:-1] + (1,), c, dtype=x.dtype, device=x.device)], dim=-1)


def torch_dtype_of(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def gram_matrix(acts: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, int]:
    """``E[f~ f~^T]`` over all positions of ``acts`` ``[..., d]`` in float64; returns (G, n_tokens)."""
    a = np.asarray(acts).reshape(-1, np.shape(acts)[-1])
    n, d = a.shape
    if n == 0:
        raise InputError("acts: no token positions; expected at least one row of activations")
    G = np.zeros((d + 1, d + 1))
    for i in range(0, n, chunk):
        x = extend(a[i:i + chunk].astype(np.float64))
        G += x.T @ x
    return G / n, n


def eig_desc(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, negatives from round-off clipped to 0) and eigenvectors of a symmetric matrix."""
    S = 0.5 * (S + S.T)
    w, V = np.linalg.eigh(S)
    order = np.argsort(w)[::-1]
    w, V = np.clip(w[order], 0.0, None), V[:, order]
    # a deterministic sign: the largest-magnitude entry of each eigenvector is positive
    idx = np.argmax(np.abs(V), axis=0)
    V = V * np.where(V[idx, np.arange(V.shape[1])] < 0, -1.0, 1.0)
    return w, V


def _keep(w: np.ndarray, threshold: float, what: str) -> int:
    if w.size == 0 or w[0] <= 0:
        raise InputError(f"{what}: all eigenvalues are zero; expected activations (and gradients) that are not all zero")
    return int(np.sum(w > threshold * w[0]))


def pca_basis(layer: int, acts: np.ndarray, gram_threshold: float) -> LayerBasis:
    """Plain PCA of ``[f, 1]`` (the Gram eigenvectors with eigenvalue above threshold)."""
    G, n = gram_matrix(acts)
    D, U = eig_desc(G)
    r = _keep(D, gram_threshold, f"layer {layer} Gram matrix")
    return LayerBasis(layer=layer, method="pca", d=G.shape[0] - 1, n_tokens=n, gram_eigenvalues=D, n_gram=r,
                      m_eigenvalues=np.zeros(0), n_kept=r, importance=D[:r].copy(), C=U[:, :r].copy(),
                      P=U[:, :r].copy(), jacobian="none")


def extended_step(step: Step, C_next: np.ndarray, dtype) -> Callable:
    """``g(f~) = C_next^T [step(f, c), c]``: node layer ``l`` (with constant) -> next basis coordinates."""
    import torch

    Cn = torch.as_tensor(C_next, dtype=dtype)

    def g(ft):
        y = step(ft[..., :-1], ft[..., -1:])
        return torch.cat([y, ft[..., -1:]], dim=-1) @ Cn

    return g


def m_prime(acts: np.ndarray, g: Callable, *, mode: str = "stochastic", n_sources: int = 4, batch_size: int = 4,
            dtype: str = "float64", seed: int = 0, progress=None) -> tuple[np.ndarray, float, int]:
    """``M' = E[J^T J]`` of ``g`` (``[rows, T, d+1] -> [rows, T, k]``) over rows and input positions.

    Parameters
    ----------
    acts : ndarray [rows, T, d]
        Node-layer activations (the constant is appended here).
    g : callable
        Differentiable torch function, e.g. :func:`extended_step`.
    mode : {"stochastic", "exact"}
        ``n_sources`` Rademacher cotangents per row, or every unit cotangent (``T * k`` per row).
    n_sources, batch_size, dtype, seed
        As in :class:`~featuregeo.tl.interaction.InteractionParams`.

    Returns
    -------
    M : ndarray [d + 1, d + 1], float64
    rel_se : float
        Relative standard error of the stochastic estimate (Frobenius norm of the entrywise standard
        error over the ``n_sources`` independent estimates, divided by ``||M||_F``); NaN when exact.
    n_products : int
        Vector-Jacobian products evaluated (per row).
    """
    import torch
    from torch.func import vjp, vmap

    tdt = torch_dtype_of(dtype)
    acts = np.asarray(acts)
    if acts.ndim != 3:
        raise InputError(f"acts: expected [rows, T, d]. Got shape {acts.shape} instead.")
    rows, T, d = acts.shape
    gen = torch.Generator().manual_seed(int(seed))
    per_source = None
    total = np.zeros((d + 1, d + 1))
    n_products = 0
    for i in range(0, rows, batch_size):
        x = extend(torch.as_tensor(acts[i:i + batch_size], dtype=tdt))
        out, pull = vjp(g, x)
        b, _, k = out.shape
        if mode == "stochastic":
            R = (torch.randint(0, 2, (n_sources,) + tuple(out.shape), generator=gen) * 2 - 1).to(tdt)
            grads = vmap(pull)(R)[0]  # [S, b, T, d+1]
            gd = grads.detach().to(torch.float64).reshape(n_sources, -1, d + 1).numpy()
            if per_source is None:
                per_source = np.zeros((n_sources, d + 1, d + 1))
            for s in range(n_sources):
                per_source[s] += gd[s].T @ gd[s]
            n_products = n_sources
        else:
            for j in range(0, T * k, 64):
                idx = torch.arange(j, min(j + 64, T * k))
                cot = torch.zeros((len(idx), T * k), dtype=tdt)
                cot[torch.arange(len(idx)), idx] = 1.0
                cot = cot.reshape(len(idx), 1, T, k).expand(len(idx), b, T, k).contiguous()
                grads = vmap(pull)(cot)[0]
                gd = grads.detach().to(torch.float64).reshape(-1, d + 1).numpy()
                total += gd.T @ gd
            n_products = T * k
        if progress is not None:
            progress(f"  M': rows {i + b}/{rows}")
    n = rows * T
    if mode == "stochastic":
        est = per_source / n
        M = est.mean(axis=0)
        se = np.sqrt(est.var(axis=0, ddof=1).sum() / n_sources)
        rel = float(se / max(np.linalg.norm(M), 1e-300))
        return M, rel, n_products
    return total / n, float("nan"), n_products


def basis_from_m(layer: int, G: np.ndarray, n_tokens: int, Mp: np.ndarray, gram_threshold: float,
                 m_threshold: float, *, m_rel_se: float = float("nan"), jacobian: str = "stochastic") -> LayerBasis:
    """``C = U D^{-1/2} V L^{1/2}`` from the Gram matrix ``G`` and ``M'`` (both ``[d+1, d+1]``)."""
    D_all, U = eig_desc(G)
    r = _keep(D_all, gram_threshold, f"layer {layer} Gram matrix")
    D, U = D_all[:r], U[:, :r]
    sq = np.sqrt(D)
    M = (U * sq).T @ Mp @ (U * sq)
    L, V = eig_desc(M)
    m_all = L.copy()
    q = _keep(L, m_threshold, f"layer {layer} M (gradients)")
    L, V = L[:q], V[:, :q]
    C = (U / sq) @ V * np.sqrt(L)
    P = (U * sq) @ V / np.sqrt(L)
    return LayerBasis(layer=layer, method="interaction", d=G.shape[0] - 1, n_tokens=n_tokens,
                      gram_eigenvalues=D_all, n_gram=r, m_eigenvalues=m_all, n_kept=q, importance=L.copy(),
                      C=C, P=P, m_rel_se=m_rel_se, jacobian=jacobian)


def build_bases(layers: Sequence[int], acts: Sequence[np.ndarray], steps: Sequence[Step], *,
                gram_threshold: float = 1e-9, m_threshold: float = 1e-9, mode: str = "stochastic",
                n_sources: int = 4, batch_size: int = 4, dtype: str = "float64", seed: int = 0,
                unit: Callable | None = None, progress=None) -> list[LayerBasis]:
    """Interaction bases of a section, from the last node layer backwards.

    Parameters
    ----------
    layers : sequence of int
        Node-layer labels (``K`` of them).
    acts : sequence of ndarray [rows, T, d_l]
        Activations of each node layer on the same rows.
    steps : sequence of callables
        ``K - 1`` steps; ``steps[i]`` maps node layer ``i`` to ``i + 1`` (see the module docstring).
    unit : callable, optional
        ``unit(index, compute) -> LayerBasis``: wraps each layer's computation (the analysis passes a
        checkpointed version); default calls ``compute()``.

    Returns
    -------
    list of LayerBasis
        In the order of ``layers``; the last one is PCA.
    """
    K = len(layers)
    if K < 2 or len(acts) != K or len(steps) != K - 1:
        raise InputError(f"section: expected K >= 2 node layers, K activation arrays and K - 1 steps. Got "
                         f"{len(layers)} layers, {len(acts)} arrays and {len(steps)} steps instead.")
    unit = unit or (lambda i, compute: compute())
    out: list[LayerBasis | None] = [None] * K
    out[-1] = unit(K - 1, lambda: pca_basis(layers[-1], acts[-1], gram_threshold))
    for i in range(K - 2, -1, -1):
        nxt = out[i + 1]

        def compute(i=i, nxt=nxt) -> LayerBasis:
            G, n = gram_matrix(acts[i])
            g = extended_step(steps[i], nxt.C, torch_dtype_of(dtype))
            Mp, rel, _ = m_prime(acts[i], g, mode=mode, n_sources=n_sources, batch_size=batch_size, dtype=dtype,
                                 seed=seed * 1000 + i, progress=progress)
            return basis_from_m(layers[i], G, n, Mp, gram_threshold, m_threshold, m_rel_se=rel, jacobian=mode)

        out[i] = unit(i, compute)
        if progress is not None:
            b = out[i]
            progress(f"interaction: layer {b.layer}: Gram rank {b.n_gram}, interaction dim {b.n_kept}"
                     f"{'' if np.isnan(b.m_rel_se) else f', M rel. s.e. {b.m_rel_se:.3g}'}")
    return out  # type: ignore[return-value]
