"""Compiled kernels of the lobes stages (numba, compiled lazily once per process).

:func:`topk_partners` — every feature's exact co-occurrence counts with all features, one feature
row at a time (never an ``n x n`` array), reduced at once to its ``top_k`` partners by each
requested score.  It is what top-k storage of :func:`~featuregeo.tl.lobes.cooccurrence.cooccurrence`
runs: at 65,536 features the pure-numpy path (a sparse product per chunk of rows, densified, then
one ``argpartition`` per score) spends most of its time building and sorting a sparse product whose
rows are in fact dense.

Scores are computed in float64 with the formulas of
:func:`~featuregeo.tl.lobes.cooccurrence.pair_scores`; Dice is a monotone function of Jaccard
(``D = 2J / (1 + J)``), so both share one ranking.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from scipy import sparse

from featuregeo.tl.lobes.common import resolve_threads

#: score codes of the kernel (Dice ranks like Jaccard)
SCORE_CODES = {"phi": 0, "jaccard": 1, "dice": 1, "overlap": 2, "simple_matching": 3}

_COMPILED: list = []


def _kernel():
    """The compiled kernel (numba, once per process)."""
    if _COMPILED:
        return _COMPILED[0]
    import numba

    @numba.njit(nogil=True, cache=False)
    def kernel(t_indptr, t_indices, b_indptr, b_indices, counts, usable, T, codes, k, rows, out_idx,
               out_n11):  # pragma: no cover - compiled
        n = counts.size
        n_codes = codes.size
        for r in range(rows.size):
            i = rows[r]
            cnt = np.zeros(n, dtype=np.int32)
            for p in range(t_indptr[i], t_indptr[i + 1]):
                t = t_indices[p]
                for q in range(b_indptr[t], b_indptr[t + 1]):
                    cnt[b_indices[q]] += 1
            s = np.empty(n, dtype=np.float64)
            ni = float(counts[i])
            for c in range(n_codes):
                code = codes[c]
                n_fin = 0
                for j in range(n):
                    nj = float(counts[j])
                    if not usable[j] or j == i:
                        s[j] = -np.inf
                        continue
                    x = float(cnt[j])
                    if code == 0:
                        v = (T * x - ni * nj) / np.sqrt(ni * (T - ni)) / np.sqrt(nj * (T - nj))
                    elif code == 1:
                        v = x / (ni + nj - x)
                    elif code == 2:
                        v = x / min(ni, nj)
                    else:
                        v = (T - ni - nj + 2.0 * x) / T
                    s[j] = v
                    n_fin += 1
                for h in range(k):
                    out_idx[r, c, h] = -1
                m = min(k, n_fin)
                if m == 0:
                    continue
                thr = np.partition(s, n - m)[n - m]
                h = 0
                for j in range(n):
                    if s[j] > thr:
                        out_idx[r, c, h] = j
                        out_n11[r, c, h] = cnt[j]
                        h += 1
                for j in range(n):
                    if h >= m:
                        break
                    if s[j] == thr:
                        out_idx[r, c, h] = j
                        out_n11[r, c, h] = cnt[j]
                        h += 1

    _COMPILED.append(kernel)
    return kernel


def topk_partners(csr: sparse.csr_matrix, counts: np.ndarray, T: int, top_k: int, rank_by: Sequence[str],
                  *, n_threads: int | None = None, rows_per_call: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact counts ``n11`` of every usable feature with its ``top_k`` partners by each score.

    Parameters
    ----------
    csr : scipy CSR, shape (n_blocks, n_features)
        The firing matrix (sorted or not; values ignored, every stored entry is a firing).
    counts : ndarray of int64, shape (n_features,)
        Column counts.
    T : int
        Number of blocks.
    top_k : int
    rank_by : sequence of affinity names
    n_threads : int, optional
        Threads (default: all cores); each runs the compiled kernel on its own rows (GIL released).
    rows_per_call : int, default=4096
        Features per round (bounds the memory of the partner lists in flight).

    Returns
    -------
    rows, cols, n11 : ndarrays
        One entry per (feature, partner) pair kept by at least one score (duplicates removed within
        a row; pairs are not symmetrised).  Features that never or always fire have none.
    """
    n = csr.shape[1]
    usable = (counts > 0) & (counts < T)
    codes = np.array(sorted({SCORE_CODES[r] for r in rank_by}), dtype=np.int64)
    k = int(min(top_k, n - 1))
    b_indptr, b_indices = csr.indptr.astype(np.int64), csr.indices.astype(np.int32, copy=False)
    csc = csr.tocsc()
    t_indptr, t_indices = csc.indptr.astype(np.int64), csc.indices.astype(np.int32, copy=False)
    del csc
    todo = np.flatnonzero(usable).astype(np.int64)
    kern = _kernel()
    cnt64 = counts.astype(np.int64)
    out_r, out_c, out_v = [], [], []

    def work(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.empty((rows.size, codes.size, k), dtype=np.int32)
        n11 = np.zeros((rows.size, codes.size, k), dtype=np.int32)
        kern(t_indptr, t_indices, b_indptr, b_indices, cnt64, usable, float(T), codes, k, rows, idx, n11)
        return idx, n11

    threads = resolve_threads(n_threads)
    for a in range(0, todo.size, rows_per_call):
        rows = todo[a:a + rows_per_call]
        parts = np.array_split(rows, min(rows.size, 4 * threads))
        if threads > 1:
            with ThreadPoolExecutor(threads) as ex:
                res = list(ex.map(work, parts))
        else:
            res = [work(x) for x in parts]
        idx = np.concatenate([x[0] for x in res])
        n11 = np.concatenate([x[1] for x in res])
        r = np.repeat(rows, codes.size * k)
        c, v = idx.ravel(), n11.ravel()
        ok = c >= 0
        r, c, v = r[ok], c[ok].astype(np.int64), v[ok]
        key, first = np.unique(r * n + c, return_index=True)
        out_r.append(key // n)
        out_c.append(key % n)
        out_v.append(v[first])
    if not out_r:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z.astype(np.int32)
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)


__all__ = ["topk_partners", "SCORE_CODES"]
