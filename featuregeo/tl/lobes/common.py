"""Shared pieces of the lobes stages: constants, the validated firing matrix, thread limits.

Nothing here is science; :mod:`~featuregeo.tl.lobes.cooccurrence`, :mod:`~featuregeo.tl.lobes.affinity`,
:mod:`~featuregeo.tl.lobes.spectral` and :mod:`~featuregeo.tl.lobes.stats` build on it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy import sparse

from featuregeo.core.errors import InputError
from featuregeo.core.results import check_int
from featuregeo.core.util import seed_sequence

#: the co-occurrence affinities, in the order the paper lists them
AFFINITIES = ("phi", "jaccard", "dice", "overlap", "simple_matching")
#: the n_clusters sweep of the paper
DEFAULT_N_CLUSTERS = (2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: bytes allowed for dense pair matrices (counts + one affinity + the solver's working copy)
DEFAULT_MEMORY_BUDGET = 8 * 2**30
#: partners kept per feature when the pair counts are stored as top-k (and in top-k affinity graphs)
DEFAULT_TOP_K = 256
#: above this many usable features the affinities are top-k graphs (``graph="auto"``)
GRAPH_DENSE_MAX = 4096
#: eigenvectors per spectral embedding by default (n_clusters above it cluster all of them)
DEFAULT_MAX_COMPONENTS = 256
#: float32 sums of 0/1 products are exact integers up to here
F32_EXACT = 2**24
#: below this many flops per step, BLAS/OpenMP threads cost more than they save (and on a busy
#: machine their spin-waits cost 10-100x): such small problems run on one thread
SMALL_WORK = 5e7


class Firing:
    """A validated blocks x features 0/1 matrix (scipy sparse -> CSR int32, or dense bool).

    Parameters
    ----------
    firing : scipy sparse matrix or array-like of shape (n_blocks, n_features)
        1 (or True) where a feature fired in a block.
    name : str, default="firing"
        The argument name used in error messages.
    """

    def __init__(self, firing: Any, name: str = "firing"):
        self.name = name
        if isinstance(firing, Firing):
            self.csr_, self.dense_, self.shape = firing.csr_, firing.dense_, firing.shape
            return
        if sparse.issparse(firing):
            m = sparse.csr_matrix(firing)
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
        """The matrix as CSR with int32 ones."""
        if self.csr_ is None:
            m = sparse.csr_matrix(self.dense_)
            self.csr_ = sparse.csr_matrix((np.ones(m.nnz, dtype=np.int32), m.indices, m.indptr), shape=m.shape)
        return self.csr_

    def nnz(self) -> int:
        return int(self.csr_.nnz) if self.csr_ is not None else int(np.count_nonzero(self.dense_))

    def column_counts(self) -> np.ndarray:
        """Blocks in which each feature fired (int64)."""
        if self.csr_ is not None:
            return np.bincount(self.csr_.indices, minlength=self.n_features).astype(np.int64)
        return self.dense_.sum(axis=0, dtype=np.int64)

    def row_counts(self) -> np.ndarray:
        """Features firing in each block (int64)."""
        if self.csr_ is not None:
            return np.diff(self.csr_.indptr).astype(np.int64)
        return self.dense_.sum(axis=1, dtype=np.int64)

    def rows_f32(self, r0: int, r1: int) -> np.ndarray:
        """Blocks ``r0:r1`` as a dense float32 array."""
        if self.csr_ is not None:
            return self.csr_[r0:r1].astype(np.float32).toarray()
        return self.dense_[r0:r1].astype(np.float32)

    def _view(self, csr: sparse.csr_matrix | None, dense: np.ndarray | None) -> "Firing":
        out = object.__new__(Firing)
        out.name = self.name
        out.csr_, out.dense_ = csr, dense
        out.shape = csr.shape if csr is not None else dense.shape
        return out

    def columns(self, cols: np.ndarray) -> "Firing":
        """The sub-matrix of the given feature columns (in that order)."""
        if self.csr_ is not None:
            m = self.csr_[:, cols].tocsr()
            m.sort_indices()
            return self._view(m, None)
        return self._view(None, np.ascontiguousarray(self.dense_[:, cols]))

    def rows(self, idx: np.ndarray) -> "Firing":
        """The sub-matrix of the given blocks (in that order)."""
        if self.csr_ is not None:
            return self._view(self.csr_[idx].tocsr(), None)
        return self._view(None, np.ascontiguousarray(self.dense_[idx]))


def int_at_least(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``, or a one-line InputError naming ``name``."""
    check_int(name, value, minimum=lo, maximum=hi)
    return int(value)


def resolve_threads(n: int | None) -> int:
    """Threads to use: ``n``, or every core when None/0."""
    return max(1, int(n if n else (os.cpu_count() or 1)))


def threads_for(work: float):
    """A context limiting BLAS and OpenMP to one thread for small problems (no limit otherwise)."""
    from contextlib import nullcontext

    from featuregeo.core.util import blas_one_thread

    return blas_one_thread() if work < SMALL_WORK else nullcontext()


def seed_int(seed: int, *tags: int) -> int:
    """A derived integer seed for the sub-stream ``tags`` of ``seed`` (for scikit-learn's random_state)."""
    return int(seed_sequence(seed, *tags).integers(2**31 - 1))


def check_seed(seed: Any) -> int:
    """``seed`` as a non-negative int, or a one-line InputError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer. Got {seed!r} instead.")
    return int(seed)


def check_n_clusters(n_clusters: Any) -> list[int]:
    """Sorted distinct integers >= 2, or a one-line InputError naming ``n_clusters``."""
    try:
        vals = list(n_clusters)
        ok = all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in vals)
    except TypeError:
        ok, vals = False, n_clusters
    if not ok:
        raise InputError(f"n_clusters: expected a sequence of integers >= 2. Got {n_clusters!r} instead.")
    ks = sorted({int(k) for k in vals})
    if not ks or ks[0] < 2:
        raise InputError(f"n_clusters: expected a non-empty sequence of integers >= 2. Got {list(vals)} instead.")
    return ks


def same(a: Any, b: Any) -> bool:
    """Deep equality that understands numpy arrays (same dtype, shape and values; NaN equals NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and bool(
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


class ArrayEq:
    """Mixin: ``==`` for dataclasses holding numpy arrays (field by field with :func:`same`).

    Use with ``@dataclass(eq=False)`` and list it before other bases.
    """

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(same(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)

    __hash__ = None  # type: ignore[assignment]


def finite_or_none(x: Any) -> float | None:
    """``float(x)``, or None when it is None, NaN or infinite (results store undefined values as None)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


__all__ = ["AFFINITIES", "DEFAULT_N_CLUSTERS", "DEFAULT_MEMORY_BUDGET", "DEFAULT_TOP_K", "GRAPH_DENSE_MAX",
           "DEFAULT_MAX_COMPONENTS", "F32_EXACT", "Firing",
           "int_at_least", "resolve_threads", "threads_for", "seed_int", "check_seed", "check_n_clusters", "finite_or_none", "same", "ArrayEq"]
