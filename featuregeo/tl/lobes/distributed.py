"""Co-occurrence counts on a Dask cluster: the sum of per-chunk ``X^T X`` over fixed chunks of blocks.

The firing matrix is cut into chunks of :data:`ROWS_PER_TASK` blocks (a fixed size, so the chunks
do not depend on the number of workers); each worker computes its chunk's upper-triangle pair
counts as a sparse integer product, and the client adds them into the dense count matrix in chunk
order.  Integer sums: the counts equal the single-process ones exactly.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
from scipy import sparse

from featuregeo.tl.lobes.common import Firing

#: blocks per task (a whole number of default harvest shards)
ROWS_PER_TASK = 2048


def chunk_pair_counts(X: sparse.csr_matrix) -> sparse.coo_matrix:
    """Upper triangle (diagonal included) of ``X^T X`` for one chunk of blocks, as int64 COO."""
    X = sparse.csr_matrix(X, dtype=np.int64)
    return sparse.triu(X.T.tocsr() @ X, format="coo")


def cluster_pair_counts(client: Any, firing: Any, *, rows_per_task: int = ROWS_PER_TASK,
                        dtype: type = np.int32) -> np.ndarray:
    """The dense symmetric pair counts ``B^T B`` of a firing matrix, computed chunk by chunk on a cluster.

    Parameters
    ----------
    client : distributed.Client
        From :func:`featuregeo.io.cluster.connect`.
    firing : Firing, scipy sparse or ndarray of shape (n_blocks, n_features)
    rows_per_task : int, default=ROWS_PER_TASK
        Blocks per task.
    dtype : numpy integer type, default=int32
        Of the result (int64 when a count may reach 2^31).

    Returns
    -------
    ndarray of shape (n_features, n_features)
        Pair counts, the per-feature counts on the diagonal.
    """
    from featuregeo.io.cluster import map_ordered

    f = firing if isinstance(firing, Firing) else Firing(firing)
    B = f.csr()
    n = f.n_features

    def chunks() -> Iterator[sparse.csr_matrix]:
        for r0 in range(0, f.n_blocks, rows_per_task):
            yield B[r0:r0 + rows_per_task]

    out = np.zeros((n, n), dtype=dtype)
    for part in map_ordered(client, chunk_pair_counts, chunks()):  # fixed (chunk) order
        out[part.row, part.col] += part.data.astype(dtype)  # (row, col) pairs are unique within a part
    c = max(1, (64 * 2**20) // (8 * n))
    for a in range(0, n, c):  # lower triangle from the upper one, a band of rows at a time
        b = min(n, a + c)
        out[b:, a:b] = out[a:b, b:].T
        d = out[a:b, a:b]
        d[...] = np.triu(d) + np.triu(d, 1).T
    return out


__all__ = ["cluster_pair_counts", "chunk_pair_counts", "ROWS_PER_TASK"]
