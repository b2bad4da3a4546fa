"""Split features: near-duplicate decoder rows (cosine >= a threshold) treated as one feature by the crystal search.

SAEs split one concept into several features whose decoder rows are almost parallel.  Around such
a tight group, a feature's nearest neighbours are all its own copies, so the side partner of a
crystal is never a candidate pair; and every copy of every corner makes its own copy of the crystal.
:func:`neighbours_beyond_duplicates` skips the copies when choosing candidate pairs, and
:func:`duplicate_groups` labels the groups so results are reported once per group.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from featuregeo.core.util import unit_rows


def neighbours_beyond_duplicates(V: np.ndarray, k: int, duplicate_cosine: float, depth: int
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs and near-duplicate pairs from one exact cosine neighbour search.

    Each row is paired with its ``k`` nearest rows whose cosine is below ``duplicate_cosine``
    (searching ``k + depth`` deep); rows at or above it are returned as duplicate pairs.

    Returns
    -------
    pairs, duplicates : ndarray of int64, shape (m, 2), rows i < j, unique

    Examples
    --------
    >>> x = np.eye(4, dtype=np.float32)
    >>> x = np.vstack([x, x[:1] + 0.01])
    >>> pairs, dups = neighbours_beyond_duplicates(x, 1, 0.95, 2)
    >>> dups.tolist()
    [[0, 4]]
    """
    from sklearn.neighbors import NearestNeighbors

    Vn = unit_rows(V)
    n = V.shape[0]
    m = min(n - 1, k + depth)
    nn = NearestNeighbors(n_neighbors=m + 1, algorithm="brute", metric="euclidean").fit(Vn)
    dist, idx = nn.kneighbors(Vn)
    cos = 1.0 - dist.astype(np.float64) ** 2 / 2
    i = np.repeat(np.arange(n), idx.shape[1]).reshape(idx.shape)
    other = idx != i
    dup = other & (cos >= duplicate_cosine)
    cand = other & ~dup
    cand &= np.cumsum(cand, axis=1) <= k  # the k nearest non-duplicates

    def unique_pairs(mask: np.ndarray) -> np.ndarray:
        a, b = i[mask], idx[mask]
        p = np.stack([np.minimum(a, b), np.maximum(a, b)], 1).astype(np.int64)
        return np.unique(p, axis=0) if len(p) else np.zeros((0, 2), dtype=np.int64)

    return unique_pairs(cand), unique_pairs(dup)


def duplicate_groups(n: int, duplicates: np.ndarray) -> np.ndarray:
    """Group id of each of ``n`` rows: connected components of the duplicate pairs.

    Examples
    --------
    >>> duplicate_groups(5, np.array([[0, 3], [3, 4]])).tolist()
    [0, 1, 2, 0, 0]
    """
    if len(duplicates) == 0:
        return np.arange(n, dtype=np.int64)
    g = sparse.coo_matrix((np.ones(len(duplicates)), (duplicates[:, 0], duplicates[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


__all__ = ["neighbours_beyond_duplicates", "duplicate_groups"]
