"""Geometry of an update ``D`` against its tokenwise part ``T`` and residual ``R = D - T``.

* energy share ``sum |T|^2 / sum |D|^2`` and explained energy ``1 - sum |R|^2 / sum |D|^2``
  (pooled over tokens);
* per-token cosines ``cos(D, T)``, ``cos(D, R)`` (means) and the mean angles in degrees;
* the dominant tokenwise subspace: the top principal directions (uncentred, i.e. by energy) of ``T``
  that hold ``energy`` of its energy; the mean fraction of each token's ``|T|^2`` and ``|R|^2`` inside
  it.  Cross-fitted: the subspace comes from the tokens of even rows and is scored on odd rows, and
  vice versa, so ``T``'s own projection is not inflated by fitting; ``chance = dim / d`` is what a
  random direction would give.
"""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["row_cos", "dominant_subspace", "geometry", "one_thread"]


@contextlib.contextmanager
def one_thread():
    """Run small dense LAPACK calls (eigh, k x k solves) on one torch thread: on a busy 2-core machine
    they are 10-100x faster than with a thread pool."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of ``a`` and ``b`` (0 where either row is zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.where((na > 0) & (nb > 0), (a * b).sum(1) / np.maximum(na * nb, 1e-300), 0.0)


def dominant_subspace(T: np.ndarray, energy: float = 0.9) -> np.ndarray:
    """Orthonormal basis ``[d, m]`` of the fewest uncentred principal directions of ``T`` holding
    ``energy`` of ``sum |T|^2``."""
    import torch

    T = np.asarray(T, dtype=np.float64)
    with one_thread():
        w, V = (x.numpy() for x in torch.linalg.eigh(torch.from_numpy(T.T @ T)))
    w, V = np.clip(w[::-1], 0, None), V[:, ::-1]
    tot = w.sum()
    m = 1 if tot <= 0 else int(np.searchsorted(np.cumsum(w) / tot, energy - 1e-12) + 1)
    return V[:, :min(m, V.shape[1])]


def _proj_frac(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    n2 = (X * X).sum(1)
    p2 = ((X @ U) ** 2).sum(1)
    return p2[n2 > 0] / n2[n2 > 0]


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def geometry(D: np.ndarray, T: np.ndarray, groups: np.ndarray, *, energy: float = 0.9, subspace: bool = True) -> dict:
    """The numbers of one :class:`~featuregeo.tl.updates.UpdateFit` (a dict of floats); ``subspace=False``
    skips the dominant-subspace projections (left NaN)."""
    D = np.asarray(D, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    R = D - T
    eD = float((D * D).sum())
    cdt, cdr = row_cos(D, T), row_cos(D, R)
    nD, nR = np.linalg.norm(D, axis=1), np.linalg.norm(R, axis=1)
    rel = nR[nD > 0] / nD[nD > 0]
    fold = (np.unique(np.asarray(groups), return_inverse=True)[1] % 2).astype(bool)
    pt, pr, dims = [], [], []
    for a, b in ((fold, ~fold), (~fold, fold)) if subspace else ():
        U = dominant_subspace(T[a], energy)
        dims.append(U.shape[1])
        pt.append(_proj_frac(T[b], U))
        pr.append(_proj_frac(R[b], U))
    dim = float(np.mean(dims)) if dims else float("nan")
    return {
        "energy_share": float((T * T).sum() / eD) if eD > 0 else float("nan"),
        "explained": float(1 - (R * R).sum() / eD) if eD > 0 else float("nan"),
        "cos_dt": float(cdt.mean()), "cos_dr": float(cdr.mean()),
        "angle_dt": float(np.degrees(np.arccos(np.clip(cdt, -1, 1))).mean()),
        "angle_dr": float(np.degrees(np.arccos(np.clip(cdr, -1, 1))).mean()),
        "proj_t": _mean(np.concatenate(pt)) if pt else float("nan"),
        "proj_r": _mean(np.concatenate(pr)) if pr else float("nan"),
        "subspace_dim": dim, "chance": dim / D.shape[1],
        "rel_error": float(np.median(rel)) if rel.size else float("nan"),
    }
