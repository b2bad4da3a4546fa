"""Nearest neighbours in representation space, taken from *other* sequences.

:func:`knn_other_rows` is an exact blocked search: one GEMM per block of queries against every
token, the query's own row masked out, ``torch.topk`` on the scores; memory is ``block x N``
scores, time ``O(N^2 d)`` at GEMM speed.  :func:`knn_brute_force` is the straightforward
reference (one query at a time, a full sort) that the benchmark and tests compare it with;
:func:`shuffled_neighbours` draws random tokens of other rows (the shuffled-neighbour control).
"""

from __future__ import annotations

import numpy as np

from featuregeo.core.errors import InputError

__all__ = ["prepare", "knn_other_rows", "knn_brute_force", "shuffled_neighbours", "recall"]


def prepare(h: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """The vectors the search compares: ``cosine`` centres ``h`` (mean over tokens) and scales rows to
    unit length (the few massive, nearly constant residual dimensions then no longer dominate);
    ``euclidean`` keeps ``h``."""
    x = np.asarray(h, dtype=np.float32)
    if metric == "euclidean":
        return x
    if metric != "cosine":
        raise InputError(f"metric: expected one of cosine, euclidean. Got {metric!r} instead.")
    x = x - x.mean(0, dtype=np.float64).astype(np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _check(x: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    groups = np.asarray(groups)
    if x.ndim != 2 or groups.shape != (x.shape[0],):
        raise InputError(f"groups: expected one row id per token ({x.shape[0]}). Got shape {groups.shape} instead.")
    _, counts = np.unique(groups, return_counts=True)
    if x.shape[0] - counts.max() < k:
        raise InputError(f"k: expected at most {x.shape[0] - counts.max()} neighbours (tokens outside the largest row). "
                         f"Got {k} instead.")
    return x, groups


def knn_other_rows(x: np.ndarray, groups: np.ndarray, k: int, *, metric: str = "cosine", block: int = 1024
                   ) -> np.ndarray:
    """The ``k`` nearest tokens of every token among tokens of other rows (exact, blocked GEMM).

    Parameters
    ----------
    x : ndarray [N, d]
        Vectors as returned by :func:`prepare` (for ``cosine``: unit rows, so the score is the dot product).
    groups : ndarray [N]
        Row (sequence) id of each token; a token's own row is never a neighbour.
    k : int
    metric : {"cosine", "euclidean"}
    block : int, default=1024
        Queries per GEMM (memory ``block x N`` floats).

    Returns
    -------
    ndarray [N, k] of int64
        Neighbour indices, nearest first.
    """
    import torch

    x, groups = _check(x, groups, k)
    X = torch.from_numpy(x)
    g = torch.from_numpy(groups.astype(np.int64))
    sq = (X * X).sum(1) if metric == "euclidean" else None
    out = np.empty((x.shape[0], k), dtype=np.int64)
    with torch.inference_mode():
        for i in range(0, x.shape[0], block):
            s = X[i:i + block] @ X.T
            if sq is not None:
                s = 2 * s - sq[None, :]  # -|q - y|^2 up to a per-query constant
            s.masked_fill_(g[i:i + block, None] == g[None, :], float("-inf"))
            out[i:i + block] = torch.topk(s, k, dim=1, sorted=True).indices.numpy()
    return out


def knn_brute_force(x: np.ndarray, groups: np.ndarray, k: int, *, metric: str = "cosine") -> np.ndarray:
    """Reference search: for each token, all distances in float64 and a full stable sort (slow; for tests
    and benchmarks)."""
    x, groups = _check(x, groups, k)
    x64 = x.astype(np.float64)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for i in range(x.shape[0]):
        if metric == "euclidean":
            dist = ((x64 - x64[i]) ** 2).sum(1)
        else:
            dist = -(x64 @ x64[i])
        dist[groups == groups[i]] = np.inf
        out[i] = np.argsort(dist, kind="stable")[:k]
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true ``k`` neighbours found (set overlap per query)."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


def shuffled_neighbours(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` random tokens (without replacement) from other rows, per token: the shuffled-neighbour control."""
    groups = np.asarray(groups)
    n = groups.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for g in np.unique(groups):
        mine = np.flatnonzero(groups == g)
        others = np.flatnonzero(groups != g)
        # k distinct picks per token: the first k of an independent permutation key per (token, candidate)
        keys = rng.random((mine.size, others.size))
        out[mine] = others[np.argpartition(keys, k - 1, axis=1)[:, :k]]
    return out
