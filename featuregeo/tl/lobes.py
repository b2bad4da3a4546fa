"""Brain scale: functional lobes from feature co-occurrence, and the test that function is spatial.

* :func:`cooccurrence` — exact integer pair counts ``n11 = B^T B`` and per-feature counts from a
  blocks x features firing matrix, by ONE chunked product chosen by density: a sparse x sparse
  product (threads over feature chunks, upper triangle only) or a float32 ``syrk`` over dense block
  chunks (exact while counts < 2^24; int64 accumulation beyond).  Never per-block outer products.
  When dense counts do not fit ``memory_budget`` they are kept as the top-k partners of every
  feature (``storage="topk"``), which the result says.
* :func:`affinity` — phi, Jaccard, Dice, overlap and simple matching from the counts;
  :func:`angular_affinity` — ``1 - arccos(cos)/pi`` between decoder rows.  Features that never fire
  or fire in every block are excluded and counted; the diagonal is set to 0; no NaN is produced.
* :func:`spectral_embedding` / :class:`SpectralSweep` — the normalised-Laplacian embedding is
  computed ONCE per affinity with as many eigenvectors as the largest ``n_clusters`` needs, and every
  ``n_clusters`` reuses its leading columns with seeded k-means (what scikit-learn's
  ``SpectralClustering(affinity="precomputed", assign_labels="kmeans")`` does per ``n_clusters``).
* :func:`ami_test`, :func:`logreg_test`, :func:`lobe_genre_table` — the statistics: AMI between
  co-occurrence and geometry lobes against a seeded permutation null; balanced accuracy of a
  logistic regression predicting the lobe from decoder rows against random Gaussian geometries;
  genre x lobe contingency on held-out blocks with chi-square and Cramer's V.
* :func:`run_lobes` — all of it -> :class:`LobeResult` (``write`` gives ``lobes.json`` and
  ``lobes_labels.npz``).

Conventions
-----------
*Diagonal.*  Every affinity matrix has a zero diagonal: self-pairs carry no co-occurrence
information, and the normalised Laplacian ignores the diagonal anyway (as ``scipy.sparse.csgraph``).

*Negative phi.*  phi lies in [-1, 1].  ``phi_shift=True`` (default, the paper's convention) uses
``phi + 1`` in [0, 2]; ``phi_shift=False`` clips negative phi to 0 and counts the clipped pairs.

*Embedding scale.*  As scikit-learn: eigenvectors ``v`` of ``D^-1/2 W D^-1/2`` (largest eigenvalues
first, the trivial one included) scaled to ``D^-1/2 v``, with a deterministic sign.  scikit-learn
does not row-normalise; ``row_normalize=True`` gives the Ng-Jordan-Weiss variant.

References
----------
Li et al., "The Geometry of Concepts: Sparse Autoencoder Feature Structure", Entropy 27(4):344 (2025).
von Luxburg, "A tutorial on spectral clustering", Statistics and Computing 17 (2007).
Vinh, Epps & Bailey, "Information theoretic measures for clusterings comparison", JMLR 11 (2010).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from featuregeo.core.util import atomic_write_bytes, atomic_write_json, resolve_rng, to_jsonable
from featuregeo.core.data import FeatureCloud
from featuregeo.core.errors import InputError, NotFittedError
from featuregeo.core.results import LegacyResult as Result, register

AFFINITIES = ("phi", "jaccard", "dice", "overlap", "simple_matching")
DEFAULT_N_CLUSTERS = (2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: bytes allowed for dense pair matrices (counts + one affinity + the solver's working copy)
DEFAULT_MEMORY_BUDGET = 8 * 2**30
DEFAULT_TOP_K = 256
#: float32 sums of 0/1 products are exact integers up to here
_F32_EXACT = 2**24
#: one sparse pair update costs about this many float32 GEMM multiply-adds (2-core Xeon, scipy SMMP
#: vs OpenBLAS sgemm); decides the product by density (crossover near 3.5% density)
_SPARSE_UPDATE_COST = 800.0
#: above this share of eigenvectors (K * 200 >= n) a dense eigensolver beats ARPACK
_ARPACK_MAX_SHARE = 1 / 200
#: dense eigenproblems up to this size run on one BLAS thread
_SMALL_EIGH = 2048


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------
class _Firing:
    """A validated blocks x features 0/1 matrix (scipy sparse -> CSR int32, or dense bool)."""

    def __init__(self, firing: Any, name: str = "firing"):
        self.name = name
        if sparse.issparse(firing):
            m = sparse.csr_matrix(firing)
            if m.ndim != 2:
                raise InputError(f"{name}: expected a 2-D blocks x features matrix. Got {m.ndim} dimensions instead.")
            m.eliminate_zeros()
            if m.dtype != np.bool_ and m.nnz and not np.all(m.data == 1):
                bad = m.data[m.data != 1][0]
                raise InputError(f"{name}: expected 0/1 (fired or not) entries. Got the value {bad!r} instead.")
            self.csr_: sparse.csr_matrix | None = sparse.csr_matrix(
                (np.ones(m.nnz, dtype=np.int32), m.indices, m.indptr), shape=m.shape)
            self.dense_: np.ndarray | None = None
            self.shape = m.shape
        else:
            a = np.asarray(firing)
            if a.ndim != 2:
                raise InputError(f"{name}: expected a 2-D blocks x features matrix. Got shape {a.shape} instead.")
            if a.dtype != np.bool_:
                if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                    raise InputError(f"{name}: expected a bool or 0/1 numeric matrix. Got dtype {a.dtype} instead.")
                ok = (a == 0) | (a == 1)
                if not ok.all():
                    raise InputError(f"{name}: expected 0/1 (fired or not) entries. Got the value "
                                     f"{a[~ok].flat[0]!r} instead.")
                a = a.astype(bool)
            self.csr_, self.dense_, self.shape = None, a, a.shape
        if self.shape[0] < 1:
            raise InputError(f"{name}: no complete block; expected at least one block (row). "
                             f"Got shape {self.shape} instead.")
        if self.shape[1] < 1:
            raise InputError(f"{name}: expected at least one feature (column). Got shape {self.shape} instead.")

    @property
    def n_blocks(self) -> int:
        return int(self.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.shape[1])

    def csr(self) -> sparse.csr_matrix:
        if self.csr_ is None:
            m = sparse.csr_matrix(self.dense_)
            self.csr_ = sparse.csr_matrix((np.ones(m.nnz, dtype=np.int32), m.indices, m.indptr), shape=m.shape)
        return self.csr_

    def nnz(self) -> int:
        return int(self.csr_.nnz) if self.csr_ is not None else int(np.count_nonzero(self.dense_))

    def column_counts(self) -> np.ndarray:
        if self.csr_ is not None:
            return np.bincount(self.csr_.indices, minlength=self.n_features).astype(np.int64)
        return self.dense_.sum(axis=0, dtype=np.int64)

    def row_counts(self) -> np.ndarray:
        if self.csr_ is not None:
            return np.diff(self.csr_.indptr).astype(np.int64)
        return self.dense_.sum(axis=1, dtype=np.int64)

    def rows_f32(self, r0: int, r1: int) -> np.ndarray:
        if self.csr_ is not None:
            return self.csr_[r0:r1].astype(np.float32).toarray()
        return self.dense_[r0:r1].astype(np.float32)

    def columns(self, cols: np.ndarray) -> "_Firing":
        out = object.__new__(_Firing)
        out.name = self.name
        if self.csr_ is not None:
            out.csr_, out.dense_ = self.csr_[:, cols].tocsr(), None
            out.csr_.sort_indices()
        else:
            out.csr_, out.dense_ = None, np.ascontiguousarray(self.dense_[:, cols])
        out.shape = (self.shape[0], int(len(cols)))
        return out


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{name}: expected one of {list(choices)}. Got {value!r} instead.")


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None
                                                                                            and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"{name}: expected an integer {rng}. Got {value!r} instead.")
    return int(value)


def _n_threads(n: int | None) -> int:
    return max(1, int(n if n else (os.cpu_count() or 1)))


#: below this many flops per step, BLAS/OpenMP threads cost more than they save (and on a busy
#: machine their spin-waits cost 10-100x): such small problems run on one thread
_SMALL_WORK = 5e7


def _threads_for(work: float):
    """A context limiting BLAS and OpenMP to one thread for small problems (no limit otherwise)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1) if work < _SMALL_WORK else nullcontext()


# ----------------------------------------------------------------------------------------------
# co-occurrence
# ----------------------------------------------------------------------------------------------
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

    def describe(self) -> dict:
        return {"n_blocks": self.n_blocks, "n_features": self.n_features, "storage": self.storage,
                "method": self.method, "top_k": self.top_k, "rank_by": list(self.rank_by),
                "seconds": self.seconds, "note": self.note}


def _choose_method(f: _Firing, method: str) -> str:
    _check_choice("method", method, ("auto", "sparse", "dense"))
    if method != "auto":
        return method
    rows = f.row_counts().astype(np.float64)
    sparse_cost = float(np.dot(rows, rows)) * _SPARSE_UPDATE_COST
    dense_cost = float(f.n_blocks) * float(f.n_features) ** 2
    return "sparse" if sparse_cost < dense_cost else "dense"


def _block_rows(n_features: int) -> int:
    """Blocks per dense float32 chunk: about 256 MB, never more than 2^24 - 1 rows."""
    return int(max(256, min(_F32_EXACT - 1, (256 * 2**20) // (4 * max(1, n_features)))))


def _feature_chunk(n_features: int, n_threads: int) -> int:
    """Features per row chunk of the pair matrix: about 128 MB of output, a few chunks per thread."""
    by_mem = (128 * 2**20) // (12 * max(1, n_features))
    by_balance = -(-n_features // (4 * n_threads))
    return int(max(16, min(1024, by_mem, max(by_balance, 16))))


def _counts_dtype(n_blocks: int) -> type:
    return np.int32 if n_blocks < 2**31 else np.int64


def _dense_pairs_sparse_product(f: _Firing, n_threads: int) -> np.ndarray:
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


def _dense_pairs_gemm(f: _Firing) -> np.ndarray:
    """``B^T B`` by float32 ``syrk`` over chunks of blocks, accumulated in place.

    float32 sums of 0/1 products are exact while every partial sum is < 2^24; with fewer blocks than
    that the accumulator stays float32 and is converted to int32 in place, otherwise each chunk's
    float32 product is added into an int64 accumulator.
    """
    from scipy.linalg.blas import ssyrk

    n, T = f.n_features, f.n_blocks
    rows = _block_rows(n)
    if T < _F32_EXACT:
        acc = np.zeros((n, n), dtype=np.float32)
        accT = acc.T  # Fortran view: syrk's upper triangle = the C-order lower triangle
        for r0 in range(0, T, rows):
            X = f.rows_f32(r0, min(T, r0 + rows))
            res = ssyrk(1.0, X.T, beta=1.0, c=accT, trans=0, lower=0, overwrite_c=1)
            if not np.shares_memory(res, acc):  # pragma: no cover - every BLAS wrapper seen works in place
                accT[...] = res
    else:
        acc = np.zeros((n, n), dtype=np.int64)
        for r0 in range(0, T, min(rows, _F32_EXACT - 1)):
            X = f.rows_f32(r0, min(T, r0 + min(rows, _F32_EXACT - 1)))
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


def _count_rows(f: _Firing, a: int, b: int, method: str, BT: sparse.csr_matrix | None) -> np.ndarray:
    """Exact ``n11[a:b, :]`` as a dense int64 array (top-k storage)."""
    if method == "sparse":
        return (BT[a:b] @ f.csr()).toarray().astype(np.int64)
    T = f.n_blocks
    rows = _block_rows(f.n_features)
    acc = np.zeros((b - a, f.n_features), dtype=np.float64 if T >= _F32_EXACT else np.float32)
    for r0 in range(0, T, rows):
        X = f.rows_f32(r0, min(T, r0 + rows))
        acc += X[:, a:b].T @ X
    return acc.astype(np.int64)


def _pair_scores(kind: str, n11: np.ndarray, ni: np.ndarray, nj: np.ndarray, T: int) -> np.ndarray:
    """An affinity for pairs (a new float array; ``ni``, ``nj`` broadcast against ``n11``).

    Undefined values (features that never or always fire) come out inf/NaN: callers exclude those
    features.  phi is computed in float64 (``T n11 - ni nj`` cancels); the others in float32 while
    counts are exact there (T < 2^24), in float64 beyond.
    """
    dt = np.float64 if (kind == "phi" or T >= _F32_EXACT) else np.float32
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


def _topk_pairs(f: _Firing, counts: np.ndarray, method: str, top_k: int, rank_by: Sequence[str],
                n_threads: int) -> sparse.csr_matrix:
    """Row chunks of exact counts -> every feature's ``top_k`` partners by each score (union)."""
    n, T = f.n_features, f.n_blocks
    usable = (counts > 0) & (counts < T)
    BT = f.csr().T.tocsr() if method == "sparse" else None
    c = _feature_chunk(n, n_threads)
    k = min(top_k, n - 1)
    if k < 1:
        return sparse.csr_matrix((n, n), dtype=_counts_dtype(T))
    rows_out, cols_out, vals_out = [], [], []

    def work(a: int):
        b = min(n, a + c)
        n11 = _count_rows(f, a, b, method, BT)
        keep = np.zeros(n11.shape, dtype=bool)
        ridx = np.arange(b - a)
        for kind in rank_by:
            s = _pair_scores(kind, n11, counts[a:b, None], counts[None, :], T)
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
    v = np.concatenate(vals_out)
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
    f = firing if isinstance(firing, _Firing) else _Firing(firing)
    _check_choice("storage", storage, ("auto", "dense", "topk"))
    top_k = _check_int("top_k", top_k, 1)
    memory_budget = _check_int("memory_budget", memory_budget, 1)
    for kind in rank_by:
        _check_choice("rank_by", kind, AFFINITIES)
    n = f.n_features
    if storage == "auto":
        storage = "dense" if 3 * n * n * 4 <= memory_budget else "topk"
    meth = _choose_method(f, method)
    threads = _n_threads(n_threads)
    counts = f.column_counts()
    if storage == "dense":
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


# ----------------------------------------------------------------------------------------------
# affinities
# ----------------------------------------------------------------------------------------------
@dataclass
class Affinity:
    """A symmetric, non-negative affinity between the usable features (zero diagonal).

    ``matrix`` is float32, dense ``(n, n)`` or scipy CSR (a top-k graph).  ``feature_index`` gives
    the positions of its rows among the input features; ``excluded`` counts the features left out.
    """

    kind: str
    matrix: Any
    feature_index: np.ndarray
    excluded: dict = field(default_factory=dict)
    n_clipped: int = 0
    note: str = ""

    @property
    def n(self) -> int:
        return int(self.feature_index.size)

    def describe(self) -> dict:
        return {"kind": self.kind, "n": self.n, "excluded": dict(self.excluded), "n_clipped": self.n_clipped,
                "sparse": bool(sparse.issparse(self.matrix)), "note": self.note}


def _usable(counts: np.ndarray, T: int) -> tuple[np.ndarray, dict]:
    never = counts == 0
    always = counts >= T
    return np.flatnonzero(~never & ~always), {"never_fired": int(never.sum()), "always_fired": int(always.sum())}


def _row_topk(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int, k: int) -> sparse.csr_matrix:
    """Keep each row's ``k`` largest values, then symmetrise (union; values are symmetric)."""
    order = np.lexsort((-vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.size) - start[rows]
    keep = (rank < k) & (vals > 0)
    m = sparse.csr_matrix((vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n, n))
    return m.maximum(m.T).tocsr()


def affinity(cooc: Cooccurrence, kind: str = "phi", *, phi_shift: bool = True,
             top_k: int | None = None) -> Affinity:
    """An affinity between features from co-occurrence counts.

    With ``n10 = ni - n11``, ``n01 = nj - n11``, ``n00 = T - ni - nj + n11``:

    * ``"phi"`` — ``(n11 n00 - n10 n01) / sqrt(ni nj (T-ni) (T-nj))`` in [-1, 1]; ``phi_shift=True``
      adds 1 (the paper's convention, [0, 2]); ``phi_shift=False`` clips negatives to 0 (counted in
      ``n_clipped``).
    * ``"jaccard"`` ``n11/(ni+nj-n11)``, ``"dice"`` ``2 n11/(ni+nj)``, ``"overlap"``
      ``n11/min(ni, nj)``, ``"simple_matching"`` ``(n11+n00)/T``.

    Features that never fire (``ni = 0``) or fire in every block (``ni = T``) make these undefined
    or uninformative: they are excluded and counted.  The diagonal is 0.  With top-k counts the
    result is each feature's ``top_k`` (default: the counts' ``top_k``) partners by this affinity,
    symmetrised — the exact k-nearest-neighbour graph of the dense affinity.

    Parameters
    ----------
    cooc : Cooccurrence
    kind : {"phi", "jaccard", "dice", "overlap", "simple_matching"}, default="phi"
    phi_shift : bool, default=True
    top_k : int, optional

    Returns
    -------
    Affinity
    """
    _check_choice("kind", kind, AFFINITIES)
    T = cooc.n_blocks
    idx, excluded = _usable(cooc.counts, T)
    n = idx.size
    if n < 2:
        raise InputError(f"firing: {n} usable feature(s) ({excluded['never_fired']} never fired, "
                         f"{excluded['always_fired']} fired in every block); expected at least 2")
    cnt = cooc.counts[idx]
    clipped = 0
    if cooc.storage == "dense":
        full = n == cooc.n_features
        out = np.empty((n, n), dtype=np.float32)
        c = max(1, (64 * 2**20) // (8 * n))
        for a in range(0, n, c):
            b = min(n, a + c)
            n11 = cooc.pairs[a:b] if full else cooc.pairs[np.ix_(idx[a:b], idx)]
            s = _pair_scores(kind, n11, cnt[a:b, None], cnt[None, :], T)
            s[np.arange(b - a), np.arange(a, b)] = 0.0
            if kind == "phi":
                if phi_shift:
                    s += 1.0
                    s[np.arange(b - a), np.arange(a, b)] = 0.0
                else:
                    neg = s < 0
                    clipped += int(neg.sum())
                    s[neg] = 0.0
            out[a:b] = s
        note = ""
        if kind == "phi":
            note = "phi + 1 (values in [0, 2])" if phi_shift else f"negative phi clipped to 0 ({clipped} entries)"
        return Affinity(kind=kind, matrix=out, feature_index=idx, excluded=excluded, n_clipped=clipped // 2,
                        note=note)
    if kind not in cooc.rank_by:
        raise InputError(f"kind: top-k counts were ranked by {list(cooc.rank_by)}, so the top-k graph of "
                         f"{kind!r} is not exact; expected one of those (or dense counts)")
    k = _check_int("top_k", top_k if top_k is not None else cooc.top_k, 1)
    coo = cooc.pairs.tocoo()  # explicit zero counts included
    pos = np.full(cooc.n_features, -1, dtype=np.int64)
    pos[idx] = np.arange(n)
    r, c = pos[coo.row], pos[coo.col]
    ok = (r >= 0) & (c >= 0) & (r != c)
    r, c = r[ok], c[ok]
    s = _pair_scores(kind, coo.data[ok], cnt[r], cnt[c], T)
    if kind == "phi":
        if phi_shift:
            s = s + 1.0
        else:
            clipped = int((s < 0).sum()) // 2
            s = np.maximum(s, 0.0)
    m = _row_topk(r, c, s, n, k)
    note = (f"top-{k} graph per feature by {kind} (symmetrised); absent pairs are 0"
            + ("; phi + 1" if kind == "phi" and phi_shift else
               (f"; negative phi clipped to 0 ({clipped} pairs)" if kind == "phi" else "")))
    return Affinity(kind=kind, matrix=m, feature_index=idx, excluded=excluded, n_clipped=clipped, note=note)


def _unit_rows(vectors: np.ndarray, name: str = "decoder_rows") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array [n_features, d_model]. Got shape {x.shape} instead.")
    norms = np.linalg.norm(x, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise InputError(f"{name}: expected finite, non-zero rows. Got {int((~np.isfinite(norms)).sum())} "
                         f"non-finite and {int((norms == 0).sum())} zero rows instead.")
    return x / norms[:, None]


def angular_affinity(vectors: np.ndarray, *, storage: str = "dense", top_k: int = DEFAULT_TOP_K) -> Affinity:
    """Angular similarity ``1 - arccos(cos)/pi`` (in [0, 1]) between rows, zero diagonal.

    ``storage="topk"`` keeps each row's ``top_k`` most similar rows (symmetrised), computed by row
    chunks so that memory stays ``O(n * top_k)``.
    """
    _check_choice("storage", storage, ("dense", "topk"))
    x = _unit_rows(vectors)
    n = x.shape[0]
    c = max(1, (64 * 2**20) // (4 * n))
    if storage == "dense":
        out = np.empty((n, n), dtype=np.float32)
        for a in range(0, n, c):
            b = min(n, a + c)
            cos = x[a:b] @ x.T
            np.clip(cos, -1.0, 1.0, out=cos)
            out[a:b] = 1.0 - np.arccos(cos) / np.pi
            out[np.arange(a, b), np.arange(a, b)] = 0.0
        return Affinity(kind="geometry", matrix=out, feature_index=np.arange(n), note="1 - arccos(cos)/pi")
    k = min(_check_int("top_k", top_k, 1), n - 1)
    rows, cols, vals = [], [], []
    for a in range(0, n, c):
        b = min(n, a + c)
        cos = x[a:b] @ x.T
        cos[np.arange(b - a), np.arange(a, b)] = -np.inf
        part = np.argpartition(-cos, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(cos, part, axis=1)
        rows.append(np.repeat(np.arange(a, b), k))
        cols.append(part.ravel())
        vals.append(1.0 - np.arccos(np.clip(v.ravel(), -1.0, 1.0)) / np.pi)
    m = _row_topk(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n, k)
    return Affinity(kind="geometry", matrix=m, feature_index=np.arange(n),
                    note=f"1 - arccos(cos)/pi, top-{k} graph per feature (symmetrised)")


# ----------------------------------------------------------------------------------------------
# spectral embedding and the n_clusters sweep
# ----------------------------------------------------------------------------------------------
@dataclass
class Embedding:
    """Spectral embedding: ``vectors[:, :k]`` is what spectral clustering into k clusters uses."""

    vectors: np.ndarray
    eigenvalues: np.ndarray
    solver: str
    n_isolated: int
    seconds: float

    def describe(self) -> dict:
        return {"n": int(self.vectors.shape[0]), "n_components": int(self.vectors.shape[1]), "solver": self.solver,
                "n_isolated": self.n_isolated, "seconds": self.seconds,
                "eigenvalues": self.eigenvalues[:16].tolist()}


def _check_affinity_values(W: Any) -> None:
    """Finite, non-negative (chunked: no full-size temporary) and symmetric on a sample of entries."""
    if sparse.issparse(W):
        chunks = [W.data]
    else:
        c = max(1, (32 * 2**20) // max(1, W.shape[0]))
        chunks = (W[a:a + c] for a in range(0, W.shape[0], c))
    for ch in chunks:
        if ch.size and (not np.isfinite(ch.min()) or not np.isfinite(ch.max()) or ch.min() < 0):
            raise InputError("affinity: expected finite, non-negative entries (clip or shift negative affinities)")
    n = W.shape[0]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    a = np.asarray(W[i, j]).ravel()
    b = np.asarray(W[j, i]).ravel()
    if not np.allclose(a, b, rtol=1e-5, atol=1e-8):
        raise InputError("affinity: expected a symmetric matrix (W[i, j] == W[j, i])")


def spectral_embedding(affinity_matrix: Any, n_components: int, *, seed: int | np.random.Generator | None = 0,
                       solver: str = "auto", overwrite: bool = False) -> Embedding:
    """Normalised-Laplacian spectral embedding of a symmetric non-negative affinity.

    The ``n_components`` largest eigenvectors ``v`` of ``M = D^-1/2 W D^-1/2`` (the smallest of the
    normalised Laplacian ``I - M``; the diagonal of ``W`` is ignored, isolated nodes get degree 1),
    returned as ``D^-1/2 v`` with the largest-magnitude entry of each column positive — the
    embedding scikit-learn's ``SpectralClustering`` computes for ``n_clusters = n_components``.

    Parameters
    ----------
    affinity_matrix : ndarray or scipy sparse, shape (n, n)
    n_components : int
    seed : int or Generator, default=0
        Start vector of ARPACK.
    solver : {"auto", "dense", "arpack"}, default="auto"
        ``"dense"``: LAPACK ``syevr`` for the wanted eigenvalue range (float32 when n > 4096).
        ``"arpack"``: Lanczos on ``M`` (``which="LA"``).  ``"auto"``: ARPACK for sparse graphs and
        for few components (``n_components * 200 < n``), dense otherwise.
    overwrite : bool, default=False
        Allow a dense ``affinity_matrix`` to be normalised and destroyed in place (saves a copy).
    """
    from scipy import linalg
    from scipy.sparse import linalg as sla

    t0 = time.perf_counter()
    _check_choice("solver", solver, ("auto", "dense", "arpack"))
    is_sparse = sparse.issparse(affinity_matrix)
    W = affinity_matrix.tocsr().astype(np.float64) if is_sparse else np.asarray(affinity_matrix)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise InputError(f"affinity: expected a square matrix. Got shape {W.shape} instead.")
    n = W.shape[0]
    k = _check_int("n_components", n_components, 1, n)
    _check_affinity_values(W)
    if solver == "auto":
        solver = "arpack" if (is_sparse or k < n * _ARPACK_MAX_SHARE) and k < n - 1 and n > 64 else "dense"
    if solver == "arpack" and k >= n:
        raise InputError(f"n_components: ARPACK needs fewer than n = {n} components. Got {k} instead.")
    if is_sparse:
        W = (W - sparse.diags(W.diagonal())).tocsr()
        W.eliminate_zeros()
        deg = np.asarray(W.sum(axis=1)).ravel()
    else:
        if not overwrite or not np.issubdtype(W.dtype, np.floating):
            W = np.array(W, dtype=np.float64 if n <= 4096 else np.float32)
        elif n <= 4096 and W.dtype != np.float64:
            W = W.astype(np.float64)
        np.fill_diagonal(W, 0)
        deg = W.sum(axis=1, dtype=np.float64)
    isolated = deg <= 0
    deg[isolated] = 1.0
    dinv = 1.0 / np.sqrt(deg)
    if is_sparse:
        M = sparse.diags(dinv) @ W @ sparse.diags(dinv)
    else:
        dv = dinv.astype(W.dtype)
        c = max(1, (64 * 2**20) // (8 * n))
        for a in range(0, n, c):
            W[a:a + c] *= dv[a:a + c, None]
            W[a:a + c] *= dv[None, :]
        M = W
    if solver == "dense":
        if is_sparse:
            M = M.toarray()
        # M is symmetric: its transpose is a Fortran-ordered view LAPACK can overwrite without a copy.
        # Small problems run single-threaded: threaded sytrd is slower there (and far slower on a busy machine)
        with _threads_for(0 if n <= _SMALL_EIGH else np.inf):
            w, v = linalg.eigh(M.T, subset_by_index=[n - k, n - 1], driver="evr", overwrite_a=True,
                               check_finite=False)
        del M
    else:
        rng = resolve_rng(seed)
        v0 = rng.uniform(-1, 1, n)
        if is_sparse:
            op = M
        else:
            Mf = M

            def mv(x: np.ndarray) -> np.ndarray:
                return (Mf @ x.astype(Mf.dtype, copy=False)).astype(np.float64)

            op = sla.LinearOperator((n, n), matvec=mv, matmat=mv, dtype=np.float64)
        w, v = sla.eigsh(op, k=k, which="LA", v0=v0, tol=0.0)
    order = np.argsort(-w, kind="stable")
    w, v = w[order], v[:, order]
    emb = (v * dinv[:, None]).astype(np.float32)
    sign = np.sign(emb[np.abs(emb).argmax(axis=0), np.arange(k)])
    sign[sign == 0] = 1
    emb *= sign
    return Embedding(vectors=emb, eigenvalues=np.asarray(w, dtype=np.float64), solver=solver,
                     n_isolated=int(isolated.sum()), seconds=time.perf_counter() - t0)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..m-1 by decreasing size (ties: first occurrence)."""
    uniq, first, inv, size = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -size))
    remap = np.empty(uniq.size, dtype=np.int32)
    remap[order] = np.arange(uniq.size, dtype=np.int32)
    return remap[inv.ravel()]


def _seed_int(seed: int, *tags: int) -> int:
    return int(np.random.default_rng([seed, *tags]).integers(2**31 - 1))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer. Got {seed!r} instead.")
    return int(seed)


def _check_n_clusters(n_clusters: Sequence[int]) -> list[int]:
    try:
        ks = sorted({int(k) for k in n_clusters})
    except (TypeError, ValueError):
        raise InputError(f"n_clusters: expected a sequence of integers >= 2. Got {n_clusters!r} instead.") from None
    if not ks or ks[0] < 2:
        raise InputError(f"n_clusters: expected a non-empty sequence of integers >= 2. Got {list(n_clusters)} instead.")
    return ks


class SpectralSweep:
    """Spectral clustering for many ``n_clusters`` from one embedding.

    Parameters
    ----------
    n_clusters : sequence of int, default=(2, 3, 4, 8, ..., 1024)
        Values >= the number of points are skipped (``skipped_``).
    n_init : int, default=3
        k-means restarts per ``n_clusters`` (k-means++ initialisation).
    row_normalize : bool, default=False
        Scale embedding rows to unit length before k-means (Ng-Jordan-Weiss); scikit-learn does not.
    solver : {"auto", "dense", "arpack"}, default="auto"
    seed : int, default=0

    Attributes
    ----------
    embedding_ : Embedding
        Computed once, with ``max(n_clusters)`` components.
    labels_ : dict int -> ndarray of int32
        Lobe labels per ``n_clusters``, numbered by decreasing lobe size.
    n_clusters_ : list of int
        The values clustered.
    skipped_ : list of int

    Examples
    --------
    >>> import numpy as np
    >>> W = np.kron(np.eye(2), np.ones((5, 5)))
    >>> SpectralSweep([2]).fit(W).labels_[2].tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """

    def __init__(self, n_clusters: Sequence[int] = DEFAULT_N_CLUSTERS, *, n_init: int = 3,
                 row_normalize: bool = False, solver: str = "auto", seed: int = 0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.row_normalize = row_normalize
        self.solver = solver
        self.seed = seed

    def fit(self, affinity: Affinity | Any, *, overwrite: bool = False) -> "SpectralSweep":
        from sklearn.cluster import KMeans

        W = affinity.matrix if isinstance(affinity, Affinity) else affinity
        ks = _check_n_clusters(self.n_clusters)
        n_init = _check_int("n_init", self.n_init, 1)
        seed = _check_seed(self.seed)
        n = W.shape[0]
        self.n_clusters_ = [k for k in ks if k < n]
        self.skipped_ = [k for k in ks if k >= n]
        if not self.n_clusters_:
            raise InputError(f"n_clusters: every value is >= the {n} usable features; expected values below {n}. "
                             f"Got {ks} instead.")
        self.embedding_ = spectral_embedding(W, max(self.n_clusters_), seed=seed, solver=self.solver,
                                             overwrite=overwrite)
        self.labels_ = {}
        for k in self.n_clusters_:
            x = np.ascontiguousarray(self.embedding_.vectors[:, :k])
            if self.row_normalize:
                nr = np.linalg.norm(x, axis=1, keepdims=True)
                nr[nr == 0] = 1.0
                x = x / nr
            with warnings.catch_warnings(), _threads_for(float(n) * k * k):
                warnings.simplefilter("ignore")  # "fewer distinct clusters than n_clusters": sizes say so
                km = KMeans(n_clusters=k, n_init=n_init, random_state=_seed_int(seed, 11, k))
                self.labels_[k] = _canonical(km.fit_predict(x))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise NotFittedError("This SpectralSweep is not fitted yet; call fit(affinity) first.")

    @property
    def labels(self) -> dict[int, np.ndarray]:
        self._check_fitted()
        return self.labels_


def spectral_sweep(affinity: Affinity | Any, n_clusters: Sequence[int] = DEFAULT_N_CLUSTERS, **kw) -> SpectralSweep:
    """Function form of :class:`SpectralSweep`: ``SpectralSweep(n_clusters, **kw).fit(affinity)``."""
    overwrite = kw.pop("overwrite", False)
    return SpectralSweep(n_clusters, **kw).fit(affinity, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def _entropy_counts(cnt: np.ndarray) -> float:
    pi = cnt[cnt > 0].astype(np.float64)
    s = pi.sum()
    return float(-np.sum((pi / s) * (np.log(pi) - np.log(s))))


def _null_summary(true: float, null: np.ndarray) -> dict:
    null = np.asarray(null, dtype=np.float64)
    mean = float(null.mean()) if null.size else float("nan")
    std = float(null.std(ddof=1)) if null.size > 1 else float("nan")
    sigma = (true - mean) / std if std > 0 else float("nan")
    p = (1.0 + float(np.sum(null >= true))) / (1.0 + null.size)
    return {"null_mean": mean, "null_std": std, "sigma": sigma, "p": p}


def ami_test(labels_a: np.ndarray, labels_b: np.ndarray, *, n_permutations: int = 100,
             seed: int | np.random.Generator | None = 0, return_null: bool = False) -> dict:
    """Adjusted mutual information between two labelings against a seeded permutation null.

    The AMI is scikit-learn's (arithmetic normalisation).  The null permutes ``labels_a``
    ``n_permutations`` times; the marginals — hence the entropies and the expected mutual information
    — do not change under permutation, so they are computed once and each null draw costs one
    contingency table.  ``sigma = (ami - null_mean) / null_std`` (std with ddof=1);
    ``p = (1 + #(null >= ami)) / (1 + n_permutations)``.  ``return_null=True`` adds the draws.
    """
    from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score

    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise InputError(f"labels: expected two 1-D labelings of the same length >= 2. Got shapes {a.shape} and "
                         f"{b.shape} instead.")
    n_perm = _check_int("n_permutations", n_permutations, 1)
    rng = resolve_rng(seed)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    ai, bi = ai.ravel().astype(np.int64), bi.ravel().astype(np.int64)
    ka, kb = int(ai.max()) + 1, int(bi.max()) + 1
    true = float(adjusted_mutual_info_score(a, b))
    try:
        from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information
    except ImportError:  # pragma: no cover - private helper moved: fall back to the public function
        expected_mutual_information = None
    null = np.empty(n_perm)
    if ka == 1 or kb == 1 or expected_mutual_information is None:
        for i in range(n_perm):
            null[i] = adjusted_mutual_info_score(a[rng.permutation(a.size)], b)
    else:
        cont = np.bincount(ai * kb + bi, minlength=ka * kb).reshape(ka, kb)
        emi = float(expected_mutual_information(sparse.csr_matrix(cont), int(a.size)))
        norm = 0.5 * (_entropy_counts(cont.sum(axis=1)) + _entropy_counts(cont.sum(axis=0)))
        eps = np.finfo("float64").eps
        den = min(norm - emi, -eps) if norm - emi < 0 else max(norm - emi, eps)
        for i in range(n_perm):
            p = ai[rng.permutation(a.size)]
            mi = mutual_info_score(None, None, contingency=np.bincount(p * kb + bi, minlength=ka * kb).reshape(ka, kb))
            num = mi - emi
            num = min(num, -eps) if num < 0 else max(num, eps)
            null[i] = num / den
    out = {"ami": true, **_null_summary(true, null), "n_permutations": n_perm}
    if return_null:
        out["null"] = null
    return out


def logreg_test(X: np.ndarray, labels: np.ndarray, *, test_size: float = 0.2, folds: int | None = None,
                null_repeats: int = 20, seed: int = 0, max_iter: int = 200, C: float = 1.0) -> dict:
    """Balanced accuracy of a logistic regression predicting ``labels`` from the rows of ``X``.

    One shuffled, stratified ``test_size`` split (or ``folds``-fold stratified cross-validation, the
    mean over folds).  The null refits on ``null_repeats`` random standard-Gaussian matrices of the
    same shape carrying the same labels and splits (seeded).  Lobes with fewer members than a split
    needs are left out and counted (``n_dropped``); when the split is impossible (more lobes than
    test rows) the accuracy fields are None with a ``note``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(labels)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InputError(f"X, labels: expected [n, d] rows and n labels. Got shapes {X.shape} and {y.shape} instead.")
    null_repeats = _check_int("null_repeats", null_repeats, 0)
    seed = _check_seed(seed)
    if not (0 < test_size < 1):
        raise InputError(f"test_size: expected a fraction in (0, 1). Got {test_size!r} instead.")
    need = 2 if folds is None else _check_int("folds", folds, 2)
    uniq, cnt = np.unique(y, return_counts=True)
    keep = np.isin(y, uniq[cnt >= need])
    out: dict[str, Any] = {"bal_acc": None, "null_mean": None, "null_std": None, "sigma": None, "p": None,
                           "n_used": int(keep.sum()), "n_dropped": int((~keep).sum()), "n_classes": 0,
                           "null_repeats": null_repeats, "n_not_converged": 0, "note": ""}
    Xk, yk = X[keep], y[keep]
    n_classes = np.unique(yk).size
    out["n_classes"] = int(n_classes)
    if n_classes < 2:
        out["note"] = "fewer than 2 lobes with enough members for a stratified split"
        return out
    try:
        if folds is None:
            splits = list(StratifiedShuffleSplit(1, test_size=test_size, random_state=seed).split(Xk, yk))
        else:
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(Xk, yk))
    except ValueError as e:
        out["note"] = f"split impossible: {' '.join(str(e).split())}"
        return out
    not_conv = 0

    def score(data: np.ndarray) -> float:
        nonlocal not_conv
        accs = []
        for tr, te in splits:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf = LogisticRegression(C=C, max_iter=max_iter).fit(data[tr], yk[tr])
            not_conv += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # predictions of lobes absent from a small test fold
                accs.append(balanced_accuracy_score(yk[te], clf.predict(data[te])))
        return float(np.mean(accs))

    with _threads_for(float(Xk.size) * n_classes):
        true = score(Xk)
        null = np.array([score(np.random.default_rng([seed, 101, r]).standard_normal(Xk.shape, dtype=np.float32))
                         for r in range(null_repeats)])
    s = _null_summary(true, null) if null_repeats else {"null_mean": None, "null_std": None, "sigma": None, "p": None}
    out.update({"bal_acc": true, **s, "n_not_converged": not_conv})
    return out


def lobe_genre_table(firing_heldout: Any, genres: Sequence[str], labels: np.ndarray, *,
                     columns: np.ndarray | None = None) -> dict:
    """Which lobe wins each held-out block, tabulated against the blocks' genres.

    A block's winning lobe is the one with the largest fraction of its features firing in the block
    (ties: the lower lobe id); blocks where no labelled feature fires are counted as ``n_silent``
    and left out.  The genre x lobe table (genres sorted, lobes ``0..m-1``) gets a chi-square test
    (``scipy.stats.chi2_contingency`` on the non-empty rows and columns) and Cramer's V
    ``sqrt(chi2 / (n (min(r, c) - 1)))``; each genre's majority lobe is its row's argmax.

    Parameters
    ----------
    firing_heldout : sparse or dense (n_blocks, n_columns) 0/1
        Blocks NOT used to find the lobes.
    genres : sequence of str, length n_blocks
    labels : ndarray of int, shape (n_labelled,)
        Lobe of each labelled feature.
    columns : ndarray of int, optional
        Column of ``firing_heldout`` for each labelled feature (default ``arange(n_labelled)``).
    """
    from scipy.stats import chi2_contingency

    f = firing_heldout if isinstance(firing_heldout, _Firing) else _Firing(firing_heldout, "firing_heldout")
    g = np.asarray(genres).astype(str)
    if g.shape != (f.n_blocks,):
        raise InputError(f"genres_heldout: expected one genre per held-out block ({f.n_blocks}). "
                         f"Got {g.shape[0] if g.ndim else 0} instead.")
    lab = np.asarray(labels).astype(np.int64)
    cols = np.arange(lab.size) if columns is None else np.asarray(columns, dtype=np.int64)
    if cols.shape != lab.shape or (cols.size and (cols.min() < 0 or cols.max() >= f.n_features)):
        raise InputError(f"columns: expected one firing column in [0, {f.n_features}) per label. "
                         f"Got {cols.size} columns for {lab.size} labels instead.")
    m = int(lab.max()) + 1 if lab.size else 0
    sizes = np.bincount(lab, minlength=m).astype(np.float64)
    onehot = sparse.csr_matrix((np.ones(lab.size), (np.arange(lab.size), lab)), shape=(lab.size, m))
    sub = f.csr()[:, cols].astype(np.float64)
    hits = np.asarray((sub @ onehot).todense())
    frac = hits / np.where(sizes > 0, sizes, 1.0)[None, :]
    silent = hits.sum(axis=1) == 0
    win = frac.argmax(axis=1)
    gnames = sorted(set(g.tolist()))
    gi = np.searchsorted(gnames, g)
    table = np.zeros((len(gnames), m), dtype=np.int64)
    np.add.at(table, (gi[~silent], win[~silent]), 1)
    out: dict[str, Any] = {"genres": gnames, "n_lobes": m, "table": table.tolist(), "n_blocks": int(f.n_blocks),
                           "n_silent": int(silent.sum()), "chi2": None, "dof": None, "p": None, "cramers_v": None,
                           "majority": {}, "note": ""}
    row_tot = table.sum(axis=1)
    out["majority"] = {name: (int(table[i].argmax()) if row_tot[i] else None) for i, name in enumerate(gnames)}
    if len(gnames) < 2:
        out["note"] = f"a single genre ({gnames[0] if gnames else 'none'}): no genre x lobe test"
        return out
    t = table[row_tot > 0][:, table.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        out["note"] = f"only {t.shape[0]} genre(s) and {t.shape[1]} lobe(s) with blocks: no chi-square test"
        return out
    chi2, p, dof, _ = chi2_contingency(t, correction=False)
    n = t.sum()
    out.update({"chi2": float(chi2), "p": float(p), "dof": int(dof),
                "cramers_v": float(np.sqrt(chi2 / (n * (min(t.shape) - 1))))})
    return out


# ----------------------------------------------------------------------------------------------
# the whole analysis
# ----------------------------------------------------------------------------------------------
@dataclass
class LobeParams:
    """Parameters of :func:`run_lobes` (stored with every result)."""

    affinities: tuple = AFFINITIES
    n_clusters: tuple = DEFAULT_N_CLUSTERS
    n_permutations: int = 100
    logreg_null_repeats: int = 20
    logreg_max_clusters: int | None = 64
    logreg_folds: int | None = None
    logreg_test_size: float = 0.2
    logreg_max_iter: int = 200
    phi_shift: bool = True
    n_init: int = 3
    row_normalize: bool = False
    solver: str = "auto"
    method: str = "auto"
    storage: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    top_k: int = DEFAULT_TOP_K
    genre_table_max_clusters: int = 16
    n_threads: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))


RECORD_KEYS = ("affinity", "n_clusters", "n_lobes", "ami", "ami_null_mean", "ami_null_std", "ami_sigma", "ami_p",
               "logreg_bal_acc", "logreg_null_mean", "logreg_null_std", "logreg_sigma", "logreg_p",
               "logreg_n_used", "genre_chi2", "genre_p", "genre_cramers_v", "genre_majority")


@register
@dataclass
class LobeResult(Result):
    """Lobes of one SAE: one record per affinity x n_clusters, genre tables, exclusions, parameters.

    ``arrays`` (not in the JSON) holds ``feature_ids``, ``n_clusters``, ``labels_<affinity>``
    (``[len(n_clusters), n_usable]`` int32, ``labels_geometry`` included) and ``map_2d`` (the first
    two principal components of the unit decoder rows); :meth:`write` stores them in
    ``lobes_labels.npz``.
    """

    kind = "lobes"
    params: dict = field(default_factory=dict)
    n_blocks: int = 0
    n_blocks_heldout: int = 0
    n_features: int = 0
    n_usable: int = 0
    d_model: int = 0
    exclusions: dict = field(default_factory=dict)
    cooccurrence: dict = field(default_factory=dict)
    affinities: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)
    n_clusters: list = field(default_factory=list)
    skipped_n_clusters: list = field(default_factory=list)
    records: list = field(default_factory=list)
    genre_tables: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    arrays: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "arrays"})

    def labels(self, affinity: str, n_clusters: int) -> np.ndarray:
        """Lobe labels of the usable features (order of ``arrays['feature_ids']``)."""
        key = f"labels_{affinity}"
        if key not in self.arrays:
            raise InputError(f"affinity: no labels for {affinity!r}; expected one of "
                             f"{sorted(k[7:] for k in self.arrays if k.startswith('labels_'))}")
        ks = list(np.asarray(self.arrays["n_clusters"]).tolist())
        if n_clusters not in ks:
            raise InputError(f"n_clusters: expected one of {ks}. Got {n_clusters!r} instead.")
        return np.asarray(self.arrays[key][ks.index(n_clusters)])

    def record(self, affinity: str, n_clusters: int) -> dict:
        for r in self.records:
            if r["affinity"] == affinity and r["n_clusters"] == n_clusters:
                return r
        raise InputError(f"record: none for affinity {affinity!r} and n_clusters {n_clusters!r}")

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``lobes.json`` (everything but the arrays) and ``lobes_labels.npz`` atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": atomic_write_json(out / "lobes.json", {"kind": self.kind, **self.to_dict()})}
        b = io.BytesIO()
        np.savez(b, **{k: np.asarray(v) for k, v in self.arrays.items()})
        paths["labels"] = atomic_write_bytes(out / "lobes_labels.npz", b.getvalue())
        return paths

    @classmethod
    def read(cls, out_dir: str | Path) -> "LobeResult":
        """Read what :meth:`write` wrote."""
        out = Path(out_dir)
        path = out / "lobes.json"
        if not path.exists():
            raise InputError(f"{path}: no lobe results here; expected the output of LobeResult.write")
        d = json.loads(path.read_text())
        d.pop("kind", None)
        res = cls.from_dict(d)
        lp = out / "lobes_labels.npz"
        if lp.exists():
            with np.load(lp, allow_pickle=False) as z:
                res.arrays = {k: z[k] for k in z.files}
        return res


def _decoder(decoder_rows: Any, n_columns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(kept float32 rows, their firing columns, number of invalid rows) with the feature count checked."""
    if isinstance(decoder_rows, FeatureCloud):
        if decoder_rows.n_total != n_columns:
            raise InputError(f"decoder_rows: the SAE has {decoder_rows.n_total} features but the firing matrix has "
                             f"{n_columns} columns; expected the harvest and the SAE to match")
        ids = np.asarray(decoder_rows.feature_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n_columns or np.unique(ids).size != ids.size):
            raise InputError(f"decoder_rows: feature ids must be distinct firing columns in [0, {n_columns})")
        return decoder_rows.vectors, ids, decoder_rows.n_excluded
    x = np.asarray(decoder_rows)
    if x.ndim != 2:
        raise InputError(f"decoder_rows: expected a 2-D array [n_features, d_model]. Got shape {x.shape} instead.")
    if x.shape[0] != n_columns:
        raise InputError(f"decoder_rows: the SAE has {x.shape[0]} features but the firing matrix has {n_columns} "
                         "columns; expected the harvest and the SAE to match")
    x = x.astype(np.float32, copy=False)
    ok = np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)
    ids = np.flatnonzero(ok)
    return (x if ok.all() else x[ok]), ids, int((~ok).sum())


def _map_2d(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    u = _unit_rows(x)
    if u.shape[0] < 3 or u.shape[1] < 2:
        return np.zeros((u.shape[0], 2), dtype=np.float32)
    return PCA(2, random_state=seed).fit_transform(u).astype(np.float32)


def run_lobes(
    firing_train: Any,
    decoder_rows: np.ndarray | FeatureCloud,
    *,
    firing_heldout: Any = None,
    genres_heldout: Sequence[str] | None = None,
    affinities: Sequence[str] = AFFINITIES,
    n_clusters: Sequence[int] = DEFAULT_N_CLUSTERS,
    n_permutations: int = 100,
    logreg_null_repeats: int = 20,
    seed: int = 0,
    **options: Any,
) -> LobeResult:
    """Functional lobes of one SAE and the tests that they are spatial.

    Parameters
    ----------
    firing_train : sparse or dense (n_blocks, n_features) 0/1
        Blocks used to find the lobes (e.g. ``Harvest.firing(layer)`` restricted to training
        documents; see :func:`split_by_document`).
    decoder_rows : ndarray (n_features, d_model) or FeatureCloud
        The SAE's decoder rows; the feature count must equal the firing matrix's column count.
    firing_heldout, genres_heldout : optional
        Held-out blocks (same columns) and their genres for the lobe -> genre table.
    affinities : sequence of str, default=all five
    n_clusters : sequence of int, default=(2, 3, 4, 8, ..., 1024)
        Values >= the number of usable features are skipped with a note.
    n_permutations : int, default=100
        AMI permutation null size.
    logreg_null_repeats : int, default=20
        Random-Gaussian geometries in the logistic-regression null.
    seed : int, default=0
    **options
        Any other field of :class:`LobeParams` (``phi_shift``, ``n_init``, ``row_normalize``,
        ``logreg_max_clusters``, ``logreg_folds``, ``memory_budget``, ``top_k``, ...).

    Returns
    -------
    LobeResult
    """
    t0 = time.perf_counter()
    known = {f.name for f in dataclasses.fields(LobeParams)}
    unknown = sorted(set(options) - known)
    if unknown:
        explicit = {"affinities", "n_clusters", "n_permutations", "logreg_null_repeats", "seed"}
        raise InputError(f"options: unknown parameter(s) {unknown}; expected fields of LobeParams "
                         f"{sorted(known - explicit)}")
    p = LobeParams(affinities=tuple(affinities), n_clusters=tuple(_check_n_clusters(n_clusters)),
                   n_permutations=n_permutations, logreg_null_repeats=logreg_null_repeats, seed=seed, **options)
    seed = _check_seed(p.seed)
    if not p.affinities:
        raise InputError(f"affinities: expected at least one of {list(AFFINITIES)}. Got none instead.")
    for a in p.affinities:
        _check_choice("affinities", a, AFFINITIES)
    _check_int("n_permutations", p.n_permutations, 1)
    _check_int("logreg_null_repeats", p.logreg_null_repeats, 0)
    f = _Firing(firing_train, "firing_train")
    x_all, ids, n_bad = _decoder(decoder_rows, f.n_features)
    held = None
    if (firing_heldout is None) != (genres_heldout is None):
        raise InputError("firing_heldout, genres_heldout: expected both (held-out blocks and their genres) or neither")
    if firing_heldout is not None:
        held = _Firing(firing_heldout, "firing_heldout")
        if held.n_features != f.n_features:
            raise InputError(f"firing_heldout: expected {f.n_features} columns like firing_train. "
                             f"Got {held.n_features} instead.")
        if len(genres_heldout) != held.n_blocks:
            raise InputError(f"genres_heldout: expected one genre per held-out block ({held.n_blocks}). "
                             f"Got {len(genres_heldout)} instead.")
    notes: list[str] = []
    counts = f.column_counts()
    T = f.n_blocks
    c_ids = counts[ids]
    use = (c_ids > 0) & (c_ids < T)
    exclusions = {"decoder_invalid": n_bad, "never_fired": int((c_ids == 0).sum()),
                  "always_fired": int((c_ids >= T).sum())}
    ids, x = ids[use], x_all[use]
    n = ids.size
    if n < 3:
        raise InputError(f"firing_train: only {n} usable feature(s) ({exclusions}); expected at least 3 features "
                         "that fire in some but not all blocks")
    ks = [k for k in p.n_clusters if k < n]
    skipped = [k for k in p.n_clusters if k >= n]
    if not ks:
        raise InputError(f"n_clusters: every value is >= the {n} usable features; expected values below {n}. "
                         f"Got {list(p.n_clusters)} instead.")
    if skipped:
        notes.append(f"n_clusters {skipped} skipped: not below the {n} usable features")
    fu = f.columns(ids)
    co = cooccurrence(fu, method=p.method, storage=p.storage, memory_budget=p.memory_budget, top_k=p.top_k,
                      rank_by=p.affinities, n_threads=p.n_threads)
    if co.storage == "topk":
        notes.append(co.note)
    sweep_kw = dict(n_init=p.n_init, row_normalize=p.row_normalize, solver=p.solver, seed=seed)

    # geometry lobes
    geo = angular_affinity(x, storage=co.storage, top_k=p.top_k)
    gs = SpectralSweep(ks, **sweep_kw).fit(geo, overwrite=True)
    del geo
    embeddings = {"geometry": gs.embedding_.describe()}
    arrays: dict[str, np.ndarray] = {"feature_ids": ids, "n_clusters": np.asarray(ks, dtype=np.int64),
                                     "labels_geometry": np.stack([gs.labels_[k] for k in ks]).astype(np.int32)}
    aff_info: dict[str, dict] = {}
    records: list[dict] = []
    genre_tables: list[dict] = []
    lr_cap = p.logreg_max_clusters
    if lr_cap is not None and any(k > lr_cap for k in ks):
        notes.append(f"logistic regression skipped above logreg_max_clusters={lr_cap}")

    held_u = None if held is None else held.columns(ids)  # held-out firing of the labelled features
    if held is not None and len(set(np.asarray(genres_heldout).astype(str).tolist())) < 2:
        notes.append(f"a single genre in the held-out blocks ({np.asarray(genres_heldout).astype(str)[0]!r}): "
                     "genre x lobe table skipped")
        held_u = None

    def genre_stats(name: str, k: int, labels: np.ndarray) -> dict | None:
        if held_u is None:
            return None
        gt = lobe_genre_table(held_u, genres_heldout, labels)
        if k <= p.genre_table_max_clusters:
            genre_tables.append({"affinity": name, "n_clusters": k, **gt})
        return gt

    for k in ks:
        genre_stats("geometry", k, gs.labels_[k])
    for ai, kind in enumerate(p.affinities):
        aff = affinity(co, kind, phi_shift=p.phi_shift, top_k=p.top_k)
        aff_info[kind] = aff.describe()
        sw = SpectralSweep(ks, **sweep_kw).fit(aff, overwrite=True)
        del aff
        embeddings[kind] = sw.embedding_.describe()
        arrays[f"labels_{kind}"] = np.stack([sw.labels_[k] for k in ks]).astype(np.int32)
        for k in ks:
            lab = sw.labels_[k]
            am = ami_test(lab, gs.labels_[k], n_permutations=p.n_permutations, seed=_seed_int(seed, 21, ai, k))
            rec: dict[str, Any] = {key: None for key in RECORD_KEYS}
            rec.update({"affinity": kind, "n_clusters": k, "n_lobes": int(lab.max()) + 1, "ami": am["ami"],
                        "ami_null_mean": am["null_mean"], "ami_null_std": am["null_std"], "ami_sigma": am["sigma"],
                        "ami_p": am["p"]})
            if lr_cap is None or k <= lr_cap:
                lr = logreg_test(x, lab, test_size=p.logreg_test_size, folds=p.logreg_folds,
                                 null_repeats=p.logreg_null_repeats, seed=_seed_int(seed, 31, k),
                                 max_iter=p.logreg_max_iter)
                rec.update({"logreg_bal_acc": lr["bal_acc"], "logreg_null_mean": lr["null_mean"],
                            "logreg_null_std": lr["null_std"], "logreg_sigma": lr["sigma"], "logreg_p": lr["p"],
                            "logreg_n_used": lr["n_used"]})
                if lr["note"]:
                    notes.append(f"{kind}, {k} lobes: logistic regression {lr['note']}")
                if lr["n_not_converged"]:
                    rec["logreg_not_converged"] = lr["n_not_converged"]
            gt = genre_stats(kind, k, lab)
            if gt is not None:
                rec.update({"genre_chi2": gt["chi2"], "genre_p": gt["p"], "genre_cramers_v": gt["cramers_v"],
                            "genre_majority": gt["majority"]})
            records.append(rec)
    arrays["map_2d"] = _map_2d(x, seed)
    return LobeResult(
        params=p.to_dict(), n_blocks=T, n_blocks_heldout=0 if held is None else held.n_blocks,
        n_features=f.n_features, n_usable=int(n), d_model=int(x.shape[1]), exclusions=exclusions,
        cooccurrence=co.describe(), affinities=aff_info, embeddings=embeddings, n_clusters=ks,
        skipped_n_clusters=skipped, records=records, genre_tables=genre_tables,
        notes=list(dict.fromkeys(notes)), seconds=time.perf_counter() - t0, arrays=arrays,
    )


def split_by_document(doc_ids: np.ndarray, heldout_fraction: float = 0.2, *, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of training and held-out blocks, held out by whole documents (seeded).

    Blocks of one document never straddle the split, so the lobe -> genre table is measured on text
    the clustering never saw.
    """
    d = np.asarray(doc_ids)
    if d.ndim != 1 or d.size < 2:
        raise InputError(f"doc_ids: expected a 1-D array of at least 2 block document ids. "
                         f"Got shape {d.shape} instead.")
    if not (0 < heldout_fraction < 1):
        raise InputError(f"heldout_fraction: expected a fraction in (0, 1). Got {heldout_fraction!r} instead.")
    docs = np.unique(d)
    if docs.size < 2:
        raise InputError("doc_ids: all blocks come from one document; expected at least 2 documents to hold some out")
    rng = np.random.default_rng([_check_seed(seed), 41])
    n_held = min(docs.size - 1, max(1, int(round(heldout_fraction * docs.size))))
    held_docs = rng.choice(docs, size=n_held, replace=False)
    mask = np.isin(d, held_docs)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def lobes_from_harvest(harvest: Any, layer: int, decoder_rows: np.ndarray | FeatureCloud, *,
                       heldout_fraction: float = 0.2, seed: int = 0, **kw: Any) -> LobeResult:
    """:func:`run_lobes` on a :class:`~featuregeo.io.harvest.Harvest` layer, holding out whole documents."""
    firing = harvest.firing(layer)
    blocks = harvest.blocks
    tr, he = split_by_document(blocks["doc_id"], heldout_fraction, seed=seed)
    genres = np.asarray(blocks["genre"]).astype(str)
    res = run_lobes(firing[tr], decoder_rows, firing_heldout=firing[he], genres_heldout=genres[he], seed=seed, **kw)
    res.params["heldout_fraction"] = heldout_fraction
    res.params["layer"] = layer
    return res


__all__ = [
    "AFFINITIES", "DEFAULT_N_CLUSTERS", "Cooccurrence", "cooccurrence", "Affinity", "affinity", "angular_affinity",
    "Embedding", "spectral_embedding", "SpectralSweep", "spectral_sweep", "ami_test", "logreg_test",
    "lobe_genre_table", "LobeParams", "LobeResult", "run_lobes", "split_by_document", "lobes_from_harvest",
]
