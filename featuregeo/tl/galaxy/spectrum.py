"""Streamed covariance, its eigenvalues, and the numerical rank of the spectrum.

The covariance is accumulated chunk by chunk in float64 from float32 products (one BLAS
``syrk``-style ``C.T @ C`` per chunk), so a 1M x 2304 decoder on disk never sits in memory.  Each
chunk is scaled by a power of two before its product (exact in binary floating point), so values
as large as 1e30 or as small as 1e-30 neither overflow nor underflow the float32 product.  Each
chunk's product runs on one BLAS thread (chunks run in parallel), and the float64 sums are added in
chunk order, so the covariance has the same bits whatever the thread count — or, with a Dask
client, the number of workers.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np
from scipy import linalg

from featuregeo.core.data import DEFAULT_CHUNK_ROWS, FeatureCloud
from featuregeo.core.errors import InputError
from featuregeo.core.util import unit_rows

#: relative precision of the float32 products the covariance is accumulated from
FLOAT32_EPS = float(np.finfo(np.float32).eps)

ChunkSink = Callable[[np.ndarray, np.ndarray], None]


def iter_rows(data: FeatureCloud | np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              name: str = "data") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(row_ids, float32 rows)`` chunk by chunk from a cloud (kept rows) or a 2-D array."""
    if isinstance(data, FeatureCloud):
        yield from data.iter_chunks(chunk_rows)
        return
    a = np.asarray(data)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array [n_points, d]. Got shape {a.shape} instead.")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name}: expected a real numeric array. Got dtype {a.dtype} instead.")
    for s in range(0, a.shape[0], chunk_rows):
        yield np.arange(s, min(s + chunk_rows, a.shape[0]), dtype=np.int64), np.asarray(a[s:s + chunk_rows],
                                                                                          dtype=np.float32)


def _pow2_exponent(x: float) -> int:
    """The exponent e with 2**(e-1) <= x < 2**e (0 for x == 0)."""
    return int(np.frexp(x)[1]) if x > 0 else 0


def _unit_rows_safe(c: np.ndarray) -> np.ndarray:
    """Unit-norm rows without overflow: each row is first scaled by a power of two to max |x| ~ 1."""
    peak = np.max(np.abs(c), axis=1, keepdims=True)
    exps = np.frexp(peak)[1].astype(np.int32)
    return unit_rows(np.ldexp(c, -exps).astype(np.float32))


class CovarianceAccumulator:
    """Running sums for a covariance (or second moment) of rows fed chunk by chunk.

    Parameters
    ----------
    center : bool
        Covariance (True) or uncentered second moment ``X^T X / n`` (False).
    normalize : bool
        Scale each row to unit norm first (zero rows stay zero).
    name : str
        Used in error messages.
    """

    def __init__(self, *, center: bool = True, normalize: bool = False, name: str = "data"):
        self.center, self.normalize, self.name = center, normalize, name
        self.n = 0
        self._s1: np.ndarray | None = None
        self._s2: np.ndarray | None = None
        self._shift: np.ndarray | None = None

    def add(self, chunk: np.ndarray) -> None:
        """Accumulate one float chunk ``[rows, d]`` (must be finite)."""
        c = self.prepare(chunk)
        if c is not None:
            self.add_moments(*chunk_moments(c, self._shift, self.name))

    def prepare(self, chunk: np.ndarray) -> np.ndarray | None:
        """The chunk as it is accumulated (float32, unit rows when ``normalize``), None when it is empty.

        The first non-empty chunk fixes the shift (:attr:`shift`) every chunk's moments are taken about.
        """
        if chunk.shape[0] == 0:
            return None
        c = np.asarray(chunk, dtype=np.float32)
        if self.normalize:
            c = _unit_rows_safe(c)
        if self._s2 is None:
            d = c.shape[1]
            self._s1 = np.zeros(d, dtype=np.float64)
            self._s2 = np.zeros((d, d), dtype=np.float64)
            # shifting by the first chunk's mean keeps the float32 products well conditioned
            self._shift = c.mean(axis=0, dtype=np.float64) if self.center else np.zeros(d)
        elif c.shape[1] != self._s2.shape[0]:
            raise InputError(f"{self.name}: rows of width {c.shape[1]} after rows of width {self._s2.shape[0]}; "
                             "expected one width")
        return c

    @property
    def shift(self) -> np.ndarray | None:
        """The point moments are taken about (the first chunk's mean when centred); None before any rows."""
        return self._shift

    def add_moments(self, s1: np.ndarray, s2: np.ndarray, n: int) -> None:
        """Add one chunk's :func:`chunk_moments` (in chunk order, this is exactly :meth:`add`)."""
        self._s1 += s1
        self._s2 += s2
        self.n += int(n)

    def mean(self) -> np.ndarray:
        """Mean of the rows accumulated so far (after normalisation when ``normalize``)."""
        if self._s1 is None or self.n == 0:
            raise InputError(f"{self.name}: no rows to compute a mean from; expected at least 1 row")
        return self._shift + self._s1 / self.n

    def result(self) -> tuple[np.ndarray, int]:
        """``(cov, n)``: the d x d float64 matrix (``np.cov`` convention, ddof=1) and the row count."""
        n = self.n
        if self._s2 is None or n == 0:
            raise InputError(f"{self.name}: no rows to compute a covariance from; expected at least 2 rows")
        if self.center:
            if n < 2:
                raise InputError(f"{self.name}: a covariance needs at least 2 rows. Got {n} instead.")
            m = self._s1 / n
            cov = (self._s2 - n * np.outer(m, m)) / (n - 1)
        else:
            cov = self._s2 / n
        cov = (cov + cov.T) * 0.5
        if not np.isfinite(cov).all():
            raise InputError(f"{self.name}: the covariance is not finite; expected finite rows of magnitude "
                             "below 1e150")
        return cov, n


def chunk_moments(c: np.ndarray, shift: np.ndarray, name: str = "data") -> tuple[np.ndarray, np.ndarray, int]:
    """``(sum of rows, sum of outer products, rows)`` of a prepared float32 chunk about ``shift``, in float64.

    The chunk is scaled by a power of two before its float32 product (exact), so large or tiny
    values neither overflow nor underflow.  A pure function of its inputs: a cluster's workers compute
    it for chunks, and adding the results in chunk order reproduces a serial :class:`CovarianceAccumulator`.
    """
    peak = max(float(np.max(np.abs(c))), float(np.max(np.abs(shift))))
    if not np.isfinite(peak):
        raise InputError(f"{name}: non-finite values (NaN or inf); expected finite rows")
    e = _pow2_exponent(peak)
    scaled = np.ldexp(c, -e).astype(np.float32, copy=False)
    scaled -= np.ldexp(shift, -e).astype(np.float32)
    s1 = np.ldexp(scaled.sum(axis=0, dtype=np.float64), e)
    s2 = np.ldexp((scaled.T @ scaled).astype(np.float64), 2 * e)  # A.T @ A dispatches to syrk
    return s1, s2, int(c.shape[0])


def _moments_task(item: tuple[np.ndarray, np.ndarray, str]) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`chunk_moments` as a cluster task: one task at a time per process, on one BLAS thread."""
    from featuregeo.core.util import blas_one_thread

    from featuregeo.io.cluster import worker_lock

    with worker_lock(), blas_one_thread("blas"):
        return chunk_moments(*item)


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _thread_map_ordered(fn: Callable, items: Iterator, threads: int) -> Iterator:
    """``fn(*item)`` on a thread pool, results in item order, at most ``threads`` items in flight."""
    if threads <= 1:
        for item in items:
            yield fn(*item)
        return
    with ThreadPoolExecutor(threads) as ex:
        pending: deque = deque()
        for item in items:
            pending.append(ex.submit(fn, *item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def prepare_rows(chunk: np.ndarray, normalize: bool) -> np.ndarray:
    """Rows as the covariance sees them: float32, scaled to unit norm when ``normalize``."""
    c = np.asarray(chunk, dtype=np.float32)
    return _unit_rows_safe(c) if normalize and c.shape[0] else c


def covariance(
    data: FeatureCloud | np.ndarray,
    *,
    center: bool = True,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_chunk: ChunkSink | None = None,
    name: str = "data",
) -> tuple[np.ndarray, int]:
    """Covariance of the rows (``np.cov`` convention, ddof=1), streamed chunk by chunk.

    Parameters
    ----------
    data : FeatureCloud or ndarray of shape (n, d)
        A cloud is streamed (its excluded rows skipped); an array is read in slices.
    center : bool, default=True
        Subtract the mean (covariance).  ``False`` gives the uncentered second moment ``X^T X / n``.
    normalize : bool, default=False
        Scale every row to unit norm first (zero rows are left at zero).
    chunk_rows : int, default=16384
        Rows per chunk; peak extra memory is about one float32 chunk plus one d x d float64 matrix
        per CPU (chunks in flight), plus the two d x d sums.
    on_chunk : callable, optional
        Called as ``on_chunk(row_ids, rows)`` with every float32 chunk (before normalisation), so a
        caller can draw a subsample in the same pass (see :class:`~featuregeo.tl.galaxy.entropy.RowSampler`).
    name : str, default="data"
        Names the input in error messages.

    Returns
    -------
    cov : ndarray of shape (d, d), float64
    n : int
        Number of rows used.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((1000, 8))
    >>> cov, n = covariance(x, chunk_rows=128)
    >>> bool(np.allclose(cov, np.cov(x, rowvar=False), atol=1e-5)), n
    (True, 1000)
    """
    return accumulate(data, center=center, normalize=normalize, chunk_rows=chunk_rows, on_chunk=on_chunk,
                      name=name).result()


def accumulate(data: FeatureCloud | np.ndarray, *, center: bool = True, normalize: bool = False,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, on_chunk: ChunkSink | None = None,
               name: str = "data", client: Any = None) -> CovarianceAccumulator:
    """One streamed pass of :func:`covariance`, returning the accumulator (its ``result()`` and ``mean()``).

    Every chunk's float32 product runs on one BLAS thread (a multi-threaded BLAS rounds differently
    with each thread count) — chunks run in parallel instead — and the chunks' float64 sums are
    added in chunk order.  So the sums are the same bits on any machine configuration, and with a
    Dask ``client`` (:func:`featuregeo.io.cluster.connect`), where the chunks are read here and
    their :func:`chunk_moments` computed on the cluster's workers, the same as without one.
    """
    from featuregeo.core.util import blas_one_thread

    acc = CovarianceAccumulator(center=center, normalize=normalize, name=name)

    def prepared() -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for ids, chunk in iter_rows(data, chunk_rows, name):
            if on_chunk is not None:
                on_chunk(ids, chunk)
            c = acc.prepare(chunk)
            if c is not None:
                yield c, acc.shift, name

    if client is not None:
        from featuregeo.io.cluster import map_ordered

        for moments in map_ordered(client, _moments_task, prepared()):
            acc.add_moments(*moments)
        return acc
    with blas_one_thread("blas"):
        for moments in _thread_map_ordered(chunk_moments, prepared(), _threads()):
            acc.add_moments(*moments)
    return acc


def eigenspectrum(cov: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, descending, tiny negative round-off clipped to 0.

    The matrix is scaled by a power of two before the decomposition (exact), so covariances of
    very large or very small values decompose like any other.

    Examples
    --------
    >>> eigenspectrum(np.diag([1.0, 3.0, 2.0])).tolist()
    [3.0, 2.0, 1.0]
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise InputError(f"cov: expected a square matrix. Got shape {cov.shape} instead.")
    if not np.isfinite(cov).all():
        raise InputError("cov: expected a finite matrix; it holds NaN or inf")
    e = _pow2_exponent(float(np.max(np.abs(cov)))) if cov.size else 0
    w = linalg.eigh(np.ldexp(cov, -e), eigvals_only=True, check_finite=False, driver="evd")
    w = np.ldexp(w[::-1].copy(), e)
    w[w < 0] = 0.0
    return w


def default_rank_rtol(d: int) -> float:
    """The default relative tolerance of :func:`numerical_rank`: ``d * eps(float32)``."""
    return max(int(d), 1) * FLOAT32_EPS


def numerical_rank(eigenvalues: np.ndarray, *, n_rows: int | None = None, center: bool = True,
                   rtol: float | None = None) -> int:
    """How many leading eigenvalues are above round-off.

    An eigenvalue counts when it exceeds ``rtol * largest`` (default ``rtol = d * eps(float32)``,
    the precision of the float32 products the covariance is built from), and never more than
    the rank the row count allows (``n_rows - 1`` centred, ``n_rows`` uncentred).

    Examples
    --------
    >>> numerical_rank(np.array([4.0, 2.0, 1e-9, 0.0]))
    2
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    if ev.size == 0 or not ev[0] > 0:
        return 0
    tol = ev[0] * (default_rank_rtol(ev.size) if rtol is None else float(rtol))
    r = int(np.sum(ev > tol))
    if n_rows is not None:
        r = min(r, max(0, int(n_rows) - (1 if center else 0)))
    return r


__all__ = ["covariance", "accumulate", "chunk_moments", "prepare_rows", "eigenspectrum", "numerical_rank", "default_rank_rtol", "CovarianceAccumulator",
           "iter_rows", "FLOAT32_EPS"]
