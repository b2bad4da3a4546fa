"""Tokenwise approximations of an update: local diagonal and low-rank maps, and a global affine baseline.

Each local fit predicts token ``i``'s update from its own vector ``h_i`` with a map fitted only on its
``k`` neighbours ``j`` (tokens of *other* rows, so the prediction is out of sample):

* ``diag``: ``T_i = a_i * h_i``, ``a_i[d] = sum_j h_j[d] D_j[d] / (sum_j h_j[d]^2 + lam)`` — a diagonal
  map, one ridge regression per coordinate; ``lam = ridge * mean_d sum_j h_j[d]^2``.
* ``lowrank``: ``T_i = A_i h_i`` with ``A_i`` the reduced-rank ridge regression (Mukherjee & Zhu 2011)
  of the neighbours' ``D_j`` on ``h_j``: the ridge solution (in its dual, ``k x k`` form, with
  ``lam = ridge * trace(H H^T) / k``) followed by the projection of its outputs onto the top ``rank``
  right singular vectors of the fitted neighbour updates.  ``rank >= k`` is plain local ridge.
* ``global``: one affine map ``D ~ W h + b`` for all tokens (ridge, ``lam = ridge * trace(X^T X) / d``),
  cross-fitted: tokens of even rows are predicted by the map fitted on odd rows and vice versa.

All three return ``T`` with the shape of ``D``; the residual is ``R = D - T``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.tl.updates.geometry import one_thread

__all__ = ["local_fits", "fit_diag", "fit_lowrank", "fit_global", "tokenwise"]

CHUNK = 512  # tokens per batched local fit (memory ~ CHUNK * k * d floats, a few times)


def _torch(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def local_fits(h: np.ndarray, D: np.ndarray, nbr: np.ndarray, specs: Sequence[tuple[str, int, int]], *,
               ridge: float = 0.01) -> list[np.ndarray]:
    """Several local fits sharing one gather of the neighbours: ``specs`` is a list of ``(cls, k, rank)``
    (``cls`` ``diag`` or ``lowrank``; ``k`` <= ``nbr.shape[1]`` uses the ``k`` nearest, i.e. the first
    ``k`` columns; ``rank`` is ignored for ``diag``).  Returns one ``T`` [N, d] per spec."""
    import torch

    H, Dt, N = _torch(h), _torch(D), torch.from_numpy(np.asarray(nbr, dtype=np.int64))
    kmax = max(k for _, k, _ in specs)
    if kmax > N.shape[1] or any(c not in ("diag", "lowrank") for c, _, _ in specs):
        raise InputError(f"specs: expected (diag|lowrank, k <= {N.shape[1]}, rank). Got {list(specs)!r} instead.")
    outs = [torch.empty_like(Dt) for _ in specs]
    diag_k = sorted({k for c, k, _ in specs if c == "diag"})
    low_k = sorted({k for c, k, _ in specs if c == "lowrank"})
    if diag_k:  # sums over neighbours as sparse products: O(N k d), no [N, k, d] gather
        import scipy.sparse as sp

        h64, D64 = np.asarray(h, dtype=np.float64), np.asarray(D, dtype=np.float64)
        HD, HH = h64 * D64, h64 * h64
        n = h64.shape[0]
        for k in diag_k:
            W = sp.csr_matrix((np.ones(n * k), np.asarray(nbr)[:, :k].ravel(), np.arange(0, n * k + 1, k)),
                              shape=(n, n))
            den = W @ HH
            lam = ridge * den.mean(1, keepdims=True)
            T = torch.from_numpy(((W @ HD) / (den + lam + 1e-30) * h64).astype(np.float32))
            for j, (c, kk, _) in enumerate(specs):
                if c == "diag" and kk == k:
                    outs[j] = T
    klow = max(low_k, default=0)
    with torch.inference_mode():
        for i in range(0, H.shape[0], CHUNK if low_k else H.shape[0] + 1):
            if not low_k:
                break
            sl = slice(i, i + CHUNK)
            idx = N[sl, :klow]
            Hn, Dn, hi = H[idx], Dt[idx], H[sl]                          # [c, k, d], [c, d]
            K = torch.bmm(Hn, Hn.transpose(1, 2)).double()               # [c, klow, klow]
            E = torch.bmm(Dn, Dn.transpose(1, 2)).double()
            q = torch.bmm(Hn, hi[:, :, None]).double()                   # neighbours . h_i
            for k in low_k:
                mine = [(j, r) for j, (c, kk, r) in enumerate(specs) if c == "lowrank" and kk == k]
                Kk, Ek, qk = K[:, :k, :k], E[:, :k, :k], q[:, :k]
                lam = ridge * Kk.diagonal(dim1=1, dim2=2).mean(1) + 1e-30
                Kr = Kk + lam[:, None, None] * torch.eye(k, dtype=torch.float64)
                coefs = []
                with one_thread():
                    w = torch.linalg.solve(Kr, qk)                          # p_i = Dn^T w (plain local ridge)
                    if any(r < k for _, r in mine):
                        # fitted neighbour updates F = S Dn, S = K (K + lam)^-1; F F^T = S E S^T
                        S = torch.linalg.solve(Kr, Kk).transpose(1, 2)
                        evals, evecs = torch.linalg.eigh(S @ Ek @ S.transpose(1, 2))
                        Ew = Ek @ w                                          # Dn p_i
                for _, r in mine:
                    if r >= k:
                        coefs.append(w[:, :, 0])
                        continue
                    U, s = evecs[:, :, -r:], evals[:, -r:].clamp_min(0).sqrt()
                    keep = s > 1e-6 * s[:, -1:].clamp_min(1e-300)           # numerical rank
                    inv = torch.where(keep, 1 / s.clamp_min(1e-300), torch.zeros_like(s))
                    C = S.transpose(1, 2) @ U * inv[:, None, :]             # right singular vectors V = Dn^T C
                    coefs.append((C @ (C.transpose(1, 2) @ Ew))[:, :, 0])   # T_i = V V^T p_i = Dn^T (C C^T Dn p_i)
                T = torch.bmm(torch.stack(coefs, 1).float(), Dn[:, :k])     # [c, n_ranks, d]
                for m, (j, _) in enumerate(mine):
                    outs[j][sl] = T[:, m]
    return [o.numpy() for o in outs]


def fit_diag(h: np.ndarray, D: np.ndarray, nbr: np.ndarray, *, ridge: float = 0.01) -> np.ndarray:
    """Local diagonal map ``T_i = a_i * h_i`` fitted on neighbours ``nbr[i]`` (see module docstring)."""
    return local_fits(h, D, nbr, [("diag", nbr.shape[1], 0)], ridge=ridge)[0]


def fit_lowrank(h: np.ndarray, D: np.ndarray, nbr: np.ndarray, *, rank: int = 8, ridge: float = 0.01) -> np.ndarray:
    """Local reduced-rank ridge map ``T_i = A_i h_i`` fitted on neighbours ``nbr[i]`` (see module docstring)."""
    return local_fits(h, D, nbr, [("lowrank", nbr.shape[1], rank)], ridge=ridge)[0]


def fit_global(h: np.ndarray, D: np.ndarray, groups: np.ndarray, *, ridge: float = 0.01) -> np.ndarray:
    """Global affine map ``D ~ W h + b`` (ridge), cross-fitted over even / odd rows."""
    import torch

    groups = np.asarray(groups)
    fold = (np.unique(groups, return_inverse=True)[1] % 2).astype(bool)
    if fold.all() or (~fold).all():
        raise InputError("groups: expected at least two rows for the cross-fitted global map")
    X = np.concatenate([np.asarray(h, dtype=np.float64), np.ones((h.shape[0], 1))], 1)
    Y = np.asarray(D, dtype=np.float64)
    T = np.empty_like(Y)
    for test in (fold, ~fold):
        Xa, Ya = X[~test], Y[~test]
        G = Xa.T @ Xa
        lam = ridge * np.trace(G) / G.shape[0]
        with one_thread():
            W = torch.linalg.solve(torch.from_numpy(G + lam * np.eye(G.shape[0])), torch.from_numpy(Xa.T @ Ya)).numpy()
        T[test] = X[test] @ W
    return T.astype(np.float32)


def tokenwise(cls: str, h: np.ndarray, D: np.ndarray, *, nbr: np.ndarray | None = None,
              groups: np.ndarray | None = None, rank: int = 8, ridge: float = 0.01) -> np.ndarray:
    """The tokenwise part ``T`` of ``D`` under class ``cls`` (``diag``, ``lowrank`` or ``global``)."""
    if cls == "diag":
        return fit_diag(h, D, nbr, ridge=ridge)
    if cls == "lowrank":
        return fit_lowrank(h, D, nbr, rank=rank, ridge=ridge)
    if cls == "global":
        return fit_global(h, D, groups, ridge=ridge)
    raise InputError(f"cls: expected one of diag, lowrank, global. Got {cls!r} instead.")
