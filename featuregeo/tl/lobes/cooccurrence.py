"""Stage 1 of lobes: exact co-occurrence counts of a blocks x features firing matrix.

:func:`cooccurrence` computes the integer pair counts ``n11 = B^T B`` and the per-feature counts by
ONE chunked product chosen by density: a sparse x sparse product (threads over feature chunks,
upper triangle only) or a float32 ``syrk`` over dense block chunks (exact while counts < 2^24;
int64 accumulation beyond).  Never per-block outer products.  When dense counts do not fit
``memory_budget`` they are kept as the top-k partners of every feature (``storage="topk"``), which
the result says.  :func:`pair_scores` turns counts into any of the :data:`AFFINITIES`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from featuregeo.core.errors import InputError
from featuregeo.core.results import check_choice
from featuregeo.tl.lobes.common import (AFFINITIES, DEFAULT_MEMORY_BUDGET, DEFAULT_TOP_K, F32_EXACT, Firing,
                                        int_at_least, resolve_threads)

#: top-k storage of at least this many features counts with the compiled kernel
#: (:func:`featuregeo.tl.lobes.kernels.topk_partners`; compiling it costs seconds, so not below)
KERNEL_MIN_FEATURES = 8192

#: one sparse pair update costs about this many float32 GEMM multiply-adds (2-core Xeon, scipy SMMP
#: vs OpenBLAS sgemm); decides the product by density (crossover near 3.5% density)
SPARSE_UPDATE_COST = 800.0


@dataclass
class CooccurrenceSummary:
    """How the co-occurrence counts of one layer were computed and stored (no arrays).

    Attributes
    ----------
    n_blocks : int
        Training blocks counted (T).
    n_features : int
        Features counted (the usable ones).
    storage : {"dense", "topk"}
        Full pair matrix, or each feature's top-k partners.
    method : {"sparse", "dense"}
        The product used.
    top_k : int or None
        Partners kept per feature and score (top-k storage only).
    rank_by : tuple of str
        Scores whose top-k partners were kept (top-k storage only).
    n_stored_pairs : int or None
        Stored pairs (top-k storage only).
    seconds : float
        Wall time of the counting.
    note : str
        What was done, in words.
    """

    n_blocks: int
    n_features: int
    storage: str
    method: str
    top_k: int | None = None
    rank_by: tuple[str, ...] = ()
    n_stored_pairs: int | None = None
    seconds: float = 0.0
    note: str = ""


@dataclass
class Cooccurrence:
    """Exact co-occurrence counts of a firing matrix.

    Attributes
    ----------
    n_blocks : int
        T, the number of blocks.
    counts : ndarray of int64, shape (n_features,)
        Blocks in which each feature fired (``n_i``).
    pairs : ndarray of shape (n_features, n_features) or scipy CSR
        ``n11``.  ``storage="dense"``: the full symmetric matrix with ``counts`` on the diagonal
        (int32, or int64 when T >= 2^31).  ``storage="topk"``: only the off-diagonal pairs among each
        feature's ``top_k`` partners by each score in ``rank_by`` (union, symmetrised) — exact
        counts at those positions, absent pairs unknown.
    storage, method, top_k, rank_by, seconds, note
        How the counts were computed and stored.
    """

    n_blocks: int
    counts: np.ndarray
    pairs: Any
    storage: str = "dense"
    method: str = "sparse"
    top_k: int | None = None
    rank_by: tuple = ()
    seconds: float = 0.0
    note: str = ""

    @property
    def n_features(self) -> int:
        return int(self.counts.size)

    def summary(self) -> "CooccurrenceSummary":
        """Everything but the arrays, for a result."""
        return CooccurrenceSummary(n_blocks=int(self.n_blocks), n_features=self.n_features, storage=self.storage,
                                   method=self.method, top_k=self.top_k, rank_by=tuple(self.rank_by),
                                   n_stored_pairs=int(self.pairs.nnz) if sparse.issparse(self.pairs) else None,
                                   seconds=float(self.seconds), note=self.note)


def _choose_method(f: Firing, method: str) -> str:
    check_choice("method", method, ("auto", "sparse", "dense"))
    if method != "auto":
        return method
    rows = f.row_counts().astype(np.float64)
    sparse_cost = float(np.dot(rows, rows)) * SPARSE_UPDATE_COST
    dense_cost = float(f.n_blocks) * float(f.n_features) ** 2
    return "sparse" if sparse_cost < dense_cost else "dense"


def _block_rows(n_features: int) -> int:
    """Blocks per dense float32 chunk: about 256 MB, never more than 2^24 - 1 rows."""
    return int(max(256, min(F32_EXACT - 1, (256 * 2**20) // (4 * max(1, n_features)))))


def _feature_chunk(n_features: int, n_threads: int) -> int:
    """Features per row chunk of the pair matrix: about 128 MB of output, a few chunks per thread."""
    by_mem = (128 * 2**20) // (12 * max(1, n_features))
    by_balance = -(-n_features // (4 * n_threads))
    return int(max(16, min(1024, by_mem, max(by_balance, 16))))


def _counts_dtype(n_blocks: int) -> type:
    return np.int32 if n_blocks < 2**31 else np.int64


def _dense_pairs_sparse_product(f: Firing, n_threads: int) -> np.ndarray:
    """Upper triangle by chunks of feature rows: ``B[:, a:b]^T @ B[:, a:]`` (scipy SMMP, GIL released)."""
    n = f.n_features
    B = f.csr()
    BT = B.T.tocsr()
    dt = _counts_dtype(f.n_blocks)
    if dt is np.int64:
        B, BT = B.astype(np.int64), BT.astype(np.int64)
    out = np.empty((n, n), dtype=dt)
    c = _feature_chunk(n, n_threads)
    starts = list(range(0, n, c))

    def work(a: int) -> None:
        b = min(n, a + c)
        prod = BT[a:b] @ B[:, a:]
        out[a:b, a:] = prod.toarray()

    if n_threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(n_threads) as ex:
            list(ex.map(work, starts))
    else:
        for a in starts:
            work(a)
    for a in starts:  # lower triangle from the upper one
        b = min(n, a + c)
        out[b:, a:b] = out[a:b, b:].T
    return out


def _dense_pairs_gemm(f: Firing) -> np.ndarray:
    """``B^T B`` by float32 ``syrk`` over chunks of blocks, accumulated in place.

    float32 sums of 0/1 products are exact while every partial sum is < 2^24; with fewer blocks than
    that the accumulator stays float32 and is converted to int32 in place, otherwise each chunk's
    float32 product is added into an int64 accumulator.
    """
    from scipy.linalg.blas import ssyrk

    n, T = f.n_features, f.n_blocks
    rows = _block_rows(n)
    if T < F32_EXACT:
        acc = np.zeros((n, n), dtype=np.float32)
        accT = acc.T  # Fortran view: syrk's upper triangle = the C-order lower triangle
        for r0 in range(0, T, rows):
            X = f.rows_f32(r0, min(T, r0 + rows))
            res = ssyrk(1.0, X.T, beta=1.0, c=accT, trans=0, lower=0, overwrite_c=1)
            if not np.shares_memory(res, acc):  # pragma: no cover - every BLAS wrapper seen works in place
                accT[...] = res
    else:
        acc = np.zeros((n, n), dtype=np.int64)
        for r0 in range(0, T, min(rows, F32_EXACT - 1)):
            X = f.rows_f32(r0, min(T, r0 + min(rows, F32_EXACT - 1)))
            part = ssyrk(1.0, X.T, trans=0, lower=0)  # Fortran (n, n): upper = C lower
            acc += np.tril(part.T).astype(np.int64)
    c = max(1, (64 * 2**20) // (8 * n))
    for a in range(0, n, c):  # upper triangle from the lower one
        b = min(n, a + c)
        acc[a:b, b:] = acc[b:, a:b].T
        d = acc[a:b, a:b]
        d[...] = np.tril(d) + np.tril(d, -1).T
    if acc.dtype == np.int64:
        return acc
    out = acc.view(np.int32)  # same buffer: convert row chunks (astype copies before assigning)
    for a in range(0, n, c):
        out[a:min(n, a + c)] = acc[a:min(n, a + c)].astype(np.int32)
    return out


def _count_rows(f: Firing, a: int, b: int, method: str, BT: sparse.csr_matrix | None) -> np.ndarray:
    """Exact ``n11[a:b, :]`` as a dense int64 array (top-k storage)."""
    if method == "sparse":
        return (BT[a:b] @ f.csr()).toarray().astype(np.int64)
    T = f.n_blocks
    rows = _block_rows(f.n_features)
    acc = np.zeros((b - a, f.n_features), dtype=np.float64 if T >= F32_EXACT else np.float32)
    for r0 in range(0, T, rows):
        X = f.rows_f32(r0, min(T, r0 + rows))
        acc += X[:, a:b].T @ X
    return acc.astype(np.int64)


def pair_scores(kind: str, n11: np.ndarray, ni: np.ndarray, nj: np.ndarray, T: int) -> np.ndarray:
    """An affinity for pairs (a new float array; ``ni``, ``nj`` broadcast against ``n11``).

    Undefined values (features that never or always fire) come out inf/NaN: callers exclude those
    features.  phi is computed in float64 (``T n11 - ni nj`` cancels); the others in float32 while
    counts are exact there (T < 2^24), in float64 beyond.
    """
    dt = np.float64 if (kind == "phi" or T >= F32_EXACT) else np.float32
    x = np.array(n11, dtype=dt)  # the only full-size working array, updated in place
    ni = np.asarray(ni, dtype=dt)
    nj = np.asarray(nj, dtype=dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "phi":
            # (n11 n00 - n10 n01) / sqrt(ni (T-ni) nj (T-nj)), with n11 n00 - n10 n01 = T n11 - ni nj
            x *= T
            x -= ni * nj
            x /= np.sqrt(ni * (T - ni))
            x /= np.sqrt(nj * (T - nj))
            return np.clip(x, -1.0, 1.0, out=x)
        if kind == "jaccard":
            den = ni + nj
            den -= x
            x /= den
            return x
        if kind == "dice":
            x *= 2
            x /= ni + nj
            return x
        if kind == "overlap":
            x /= np.minimum(ni, nj)
            return x
        if kind == "simple_matching":
            # (n11 + n00) / T = (T - ni - nj + 2 n11) / T
            x *= 2
            x += T
            x -= ni
            x -= nj
            x /= T
            return x
    raise InputError(f"kind: expected one of {list(AFFINITIES)}. Got {kind!r} instead.")  # pragma: no cover


def _topk_pairs(f: Firing, counts: np.ndarray, method: str, top_k: int, rank_by: Sequence[str],
                n_threads: int) -> sparse.csr_matrix:
    """Row chunks of exact counts -> every feature's ``top_k`` partners by each score (union)."""
    n, T = f.n_features, f.n_blocks
    usable = (counts > 0) & (counts < T)
    k = min(top_k, n - 1)
    if k < 1:
        return sparse.csr_matrix((n, n), dtype=_counts_dtype(T))
    if method == "sparse" and n >= KERNEL_MIN_FEATURES:
        from featuregeo.tl.lobes.kernels import topk_partners

        return _symmetric_counts(*topk_partners(f.csr(), counts, T, k, rank_by, n_threads=n_threads), n, T)
    BT = f.csr().T.tocsr() if method == "sparse" else None
    c = _feature_chunk(n, n_threads)
    rows_out, cols_out, vals_out = [], [], []

    def work(a: int):
        b = min(n, a + c)
        n11 = _count_rows(f, a, b, method, BT)
        keep = np.zeros(n11.shape, dtype=bool)
        ridx = np.arange(b - a)
        for kind in rank_by:
            s = pair_scores(kind, n11, counts[a:b, None], counts[None, :], T)
            s[~np.isfinite(s)] = -np.inf
            s[:, ~usable] = -np.inf
            s[ridx, ridx + a] = -np.inf
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            top = np.zeros_like(keep)
            top[ridx[:, None], part] = True
            keep |= top & np.isfinite(s)
        keep[~usable[a:b]] = False
        r, cidx = np.nonzero(keep)
        return r + a, cidx, n11[r, cidx]

    starts = list(range(0, n, c))
    if n_threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(n_threads) as ex:
            parts = list(ex.map(work, starts))
    else:
        parts = [work(a) for a in starts]
    for r, cc, v in parts:
        rows_out.append(r)
        cols_out.append(cc)
        vals_out.append(v)
    r = np.concatenate(rows_out).astype(np.int64)
    cc = np.concatenate(cols_out).astype(np.int64)
    return _symmetric_counts(r, cc, np.concatenate(vals_out), n, T)


def _symmetric_counts(r: np.ndarray, cc: np.ndarray, v: np.ndarray, n: int, T: int) -> sparse.csr_matrix:
    """CSR of the pairs and their transposes (counts are symmetric)."""
    r, cc = r.astype(np.int64), cc.astype(np.int64)
    # symmetric union (n11 is symmetric, so both copies agree); zero counts are kept explicitly
    key, first = np.unique(np.concatenate([r * n + cc, cc * n + r]), return_index=True)
    vals = np.concatenate([v, v])[first].astype(_counts_dtype(T))
    indptr = np.searchsorted(key // n, np.arange(n + 1)).astype(np.int64)
    return sparse.csr_matrix((vals, (key % n).astype(np.int64), indptr), shape=(n, n))


def cooccurrence(
    firing: Any,
    *,
    method: str = "auto",
    storage: str = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    top_k: int = DEFAULT_TOP_K,
    rank_by: Sequence[str] = AFFINITIES,
    n_threads: int | None = None,
    client: Any = None,
) -> Cooccurrence:
    """Exact pair counts ``n11 = B^T B`` and per-feature counts of a blocks x features firing matrix.

    Parameters
    ----------
    firing : scipy sparse matrix or ndarray of shape (n_blocks, n_features)
        1 (or True) where a feature fired in a block.  :meth:`featuregeo.io.harvest.Harvest.firing`
        returns one.
    method : {"auto", "sparse", "dense"}, default="auto"
        ``"sparse"``: a scipy sparse product per chunk of feature rows (upper triangle only,
        ``n_threads`` threads).  ``"dense"``: float32 ``syrk`` over dense chunks of blocks (exact:
        float32 accumulation only while T < 2^24, int64 beyond).  ``"auto"`` compares the sparse
        work (sum over blocks of active features squared, times a calibrated cost) with the dense
        work (T * n_features^2): sparse below roughly 3.5% density.
    storage : {"auto", "dense", "topk"}, default="auto"
        ``"auto"``: dense when three n_features^2 x 4-byte matrices fit ``memory_budget``
        (counts, one float32 affinity and the eigensolver's copy), top-k otherwise.
    memory_budget : int, default=8 GiB
    top_k : int, default=256
        Partners kept per feature and score in top-k storage.
    rank_by : sequence of affinity names, default=all five
        Scores whose top-k partners are kept (their union), so that each of these affinities can
        later be sparsified to its exact top-k graph.
    n_threads : int, optional
        Threads for the sparse product (default: all cores).
    client : distributed.Client, optional
        Dense storage: count on a Dask cluster as the sum of per-chunk sparse ``X^T X``
        (:func:`featuregeo.tl.lobes.distributed.cluster_pair_counts`); the counts are the same.
        Top-k storage is computed here.

    Returns
    -------
    Cooccurrence

    Examples
    --------
    >>> import numpy as np
    >>> B = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=bool)
    >>> co = cooccurrence(B)
    >>> co.pairs.tolist()
    [[3, 2, 2], [2, 2, 1], [2, 1, 2]]
    """
    t0 = time.perf_counter()
    f = firing if isinstance(firing, Firing) else Firing(firing)
    check_choice("storage", storage, ("auto", "dense", "topk"))
    top_k = int_at_least("top_k", top_k, 1)
    memory_budget = int_at_least("memory_budget", memory_budget, 1)
    for kind in rank_by:
        check_choice("rank_by", kind, AFFINITIES)
    n = f.n_features
    if storage == "auto":
        storage = "dense" if 3 * n * n * 4 <= memory_budget else "topk"
    meth = _choose_method(f, method)
    threads = resolve_threads(n_threads)
    counts = f.column_counts()
    if storage == "dense" and client is not None:
        from featuregeo.tl.lobes.distributed import ROWS_PER_TASK, cluster_pair_counts

        pairs, meth = cluster_pair_counts(client, f, dtype=_counts_dtype(f.n_blocks)), "sparse"
        note = (f"dense {pairs.dtype} pair counts ({n} x {n}) on a Dask cluster: the sum of sparse X^T X over "
                f"chunks of {ROWS_PER_TASK} blocks")
        k, rb = None, ()
    elif storage == "dense":
        pairs = _dense_pairs_sparse_product(f, threads) if meth == "sparse" else _dense_pairs_gemm(f)
        note = f"dense {pairs.dtype} pair counts ({n} x {n}) by one chunked {meth} product"
        k, rb = None, ()
    else:
        rb = tuple(dict.fromkeys(rank_by)) or ("jaccard",)
        pairs = _topk_pairs(f, counts, meth, top_k, rb, threads)
        k = top_k
        note = (f"dense pair counts for {n} features would need {3 * n * n * 4 / 2**30:.1f} GiB > budget "
                f"{memory_budget / 2**30:.1f} GiB: stored the top {top_k} partners per feature by "
                f"{', '.join(rb)} (exact counts, {pairs.nnz} stored pairs); other pairs are not connected")
    return Cooccurrence(n_blocks=f.n_blocks, counts=counts, pairs=pairs, storage=storage, method=meth, top_k=k,
                        rank_by=rb, seconds=time.perf_counter() - t0, note=note)


__all__ = ["Cooccurrence", "CooccurrenceSummary", "cooccurrence", "pair_scores", "SPARSE_UPDATE_COST"]
