"""Presentation maths of the atlas: a 2-D layout of decoder directions and co-firing partners.

Nothing here is science: :func:`layout_2d` places points for the eye (cosine geometry) and
:func:`cofiring` lists, for every feature, the features it fires with most often (one chunked sparse
product ``B^T B`` over a harvest's blocks x features firing matrix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import unit_rows

LAYOUTS = ("umap", "tsne", "pca")
TOP_COFIRING = 5


def layout_2d(vectors: np.ndarray, method: str = "umap", *, seed: int = 0, n_neighbors: int = 15,
              n_epochs: int | None = None) -> np.ndarray:
    """2-D coordinates of decoder directions (cosine geometry: rows are scaled to unit norm first).

    Parameters
    ----------
    vectors : ndarray of shape (n_features, d_model)
    method : {"umap", "tsne", "pca"}, default="umap"
        UMAP (umap-learn, cosine metric), t-SNE (scikit-learn, cosine metric, PCA init) or the first
        two principal components (randomised solver; fast).
    seed : int, default=0
        Random state of the layout; same inputs and seed give identical coordinates.
    n_neighbors : int, default=15
        UMAP neighbourhood size (capped at n_features - 1); the neighbours are exact
        (:func:`cosine_knn`).
    n_epochs : int, optional
        UMAP optimisation epochs (None: umap-learn's default, 500 below 10,000 points).

    Returns
    -------
    ndarray of shape (n_features, 2), float32
    """
    if method not in LAYOUTS:
        raise InputError(f"layout: expected one of {', '.join(LAYOUTS)}. Got {method!r} instead.")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3 or x.shape[1] < 2:
        raise InputError(f"vectors: expected at least 3 features of at least 2 dimensions. "
                         f"Got shape {x.shape} instead.")
    if not np.isfinite(x).all():
        raise InputError("vectors: expected finite values. Got NaN or inf instead.")
    x = unit_rows(x)
    if method == "pca":
        from sklearn.decomposition import PCA

        y = PCA(n_components=2, svd_solver="randomized", random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
        y = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                 random_state=seed).fit_transform(x)
    else:
        import warnings

        k = int(min(n_neighbors, x.shape[0] - 1))
        umap = umap_module()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state" etc.
            knn = cosine_knn(x, k) + (None,)
            y = umap.UMAP(n_components=2, metric="cosine", n_neighbors=k, n_epochs=n_epochs, precomputed_knn=knn,
                          random_state=seed, init="spectral" if x.shape[0] > 3 else "random").fit_transform(x)
    return np.ascontiguousarray(y, dtype=np.float32)


def cosine_knn(x: np.ndarray, k: int, *, max_chunk_entries: int = 2**24) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours by cosine distance, each row's own index first (distance 0).

    Rows must be unit vectors.  Ties are broken by index, so the result is a pure function of ``x``.
    One chunked product ``x x^T`` (bounded by ``max_chunk_entries``) replaces UMAP's approximate
    search: exact, and free of that search's numba compilation.

    Returns
    -------
    indices : ndarray (n, k) int32
    distances : ndarray (n, k) float32, ``1 - cosine``, non-decreasing along each row
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"k: expected 1..{n} neighbours. Got {k!r} instead.")
    idx = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k), dtype=np.float32)
    chunk = int(max(1, min(n, max_chunk_entries // max(1, n))))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sim = x[s:e] @ x.T
        sim[np.arange(e - s), np.arange(s, e)] = np.inf  # a point is its own first neighbour
        kth = np.partition(sim, n - k, axis=1)[:, n - k]  # each row's k-th largest similarity
        for r in range(e - s):
            cand = np.flatnonzero(sim[r] >= kth[r])  # k of them, more when tied at the k-th
            sel = cand[np.lexsort((cand, -sim[r, cand]))[:k]]
            idx[s + r] = sel
            top = sim[r, sel]
            top[0] = 1.0
            dist[s + r] = np.clip(1.0 - top, 0.0, 2.0)
    return idx, dist


_UMAP_CACHED: list = []


def compile_layout() -> float:
    """Compile (or load from the cache) everything a UMAP layout runs, on a small random cloud; returns
    the seconds it took.  Set-up calls it once so the first atlas does not wait for numba."""
    import time

    t = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    layout_2d(x, "umap", n_neighbors=5, n_epochs=10)
    return time.perf_counter() - t


def numba_cache_dir():
    """Where numba keeps compiled code for featuregeo: ``$NUMBA_CACHE_DIR``, else ``<featuregeo cache>/numba``."""
    import os
    from pathlib import Path

    from featuregeo.io.models import featuregeo_cache_root

    return Path(os.environ.get("NUMBA_CACHE_DIR") or featuregeo_cache_root() / "numba")


def umap_module():
    """``umap`` with its numba compilations cached on disk (:func:`numba_cache_dir`).

    umap-learn compiles its functions in every new process (tens of seconds on two cores) because
    few of them ask numba to cache.  Here every compiled function of ``umap`` gets numba's own
    on-disk cache (``Dispatcher.enable_caching``) before its first call, so only the first run of a
    machine compiles; later runs load the machine code.
    """
    import os
    import sys
    import warnings

    if not _UMAP_CACHED:
        cache = numba_cache_dir()
        if "numba" not in sys.modules:
            os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))
        import numba.core.config

        if not numba.core.config.CACHE_DIR:
            numba.core.config.CACHE_DIR = str(cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap
        from numba.core.registry import CPUDispatcher

        for name, mod in list(sys.modules.items()):
            if mod is not None and (name == "umap" or name.startswith("umap.")):
                for f in list(vars(mod).values()):
                    if isinstance(f, CPUDispatcher):
                        f.enable_caching()
        _UMAP_CACHED.append(umap)
    return _UMAP_CACHED[0]


def cofiring(firing: Any, top: int = TOP_COFIRING, *,
             max_chunk_entries: int = 2**23) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature firing counts and top co-firing partners from one chunked sparse product ``B^T B``.

    Partners are ranked by Jaccard similarity ``n11 / (n_i + n_j - n11)`` (raw ``n11`` would rank
    the most frequent features first for everyone), ties by ``n11`` then by id; a feature is never
    its own partner and pairs that never co-fire are not listed.

    Parameters
    ----------
    firing : scipy sparse matrix or ndarray (n_blocks, n_features)
        1 where a feature fired in a block.
    top : int, default=5
    max_chunk_entries : int
        Bound on the dense ``chunk x n_features`` slab of counts held at once.

    Returns
    -------
    counts : ndarray (n_features,) int64
    partners : ndarray (n_features, top) int32, -1 where fewer partners exist
    n11 : ndarray (n_features, top) int32, blocks shared with each partner
    """
    from scipy import sparse

    if top < 1:
        raise InputError(f"top: expected a positive integer. Got {top!r} instead.")
    b = sparse.csr_matrix(firing, copy=True)
    b.eliminate_zeros()
    if b.ndim != 2 or b.shape[0] < 1:
        raise InputError(f"firing: expected a 2-D blocks x features matrix with at least one block. "
                         f"Got shape {b.shape} instead.")
    b = sparse.csr_matrix((np.ones(b.nnz, dtype=np.float32), b.indices, b.indptr), shape=b.shape)
    b.sum_duplicates()
    b.data[:] = 1.0
    n = b.shape[1]
    counts = np.asarray(b.sum(axis=0)).ravel().astype(np.int64)
    bt = b.T.tocsr()
    partners = np.full((n, top), -1, dtype=np.int32)
    shared = np.zeros((n, top), dtype=np.int32)
    chunk = int(max(1, min(n, max_chunk_entries // max(1, n))))
    kk = min(top, n - 1)
    if kk < 1:
        return counts, partners, shared
    cf = counts.astype(np.float64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        c = (bt[s:e] @ b).toarray().astype(np.float64)  # exact integers (float64)
        rows = np.arange(e - s)
        c[rows, np.arange(s, e)] = 0.0
        denom = cf[s:e, None] + cf[None, :] - c
        score = np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)
        # the kk-th largest score per row; candidates are the pairs at or above it that co-fire at all,
        # ordered exactly by (Jaccard desc, n11 desc, id asc)
        kth = np.partition(score, n - kk, axis=1)[:, n - kk]
        for r in range(e - s):
            cand = np.flatnonzero((score[r] >= kth[r]) & (c[r] > 0))
            if cand.size:
                sel = cand[np.lexsort((cand, -c[r, cand], -score[r, cand]))[:kk]]
                partners[s + r, :sel.size] = sel
                shared[s + r, :sel.size] = c[r, sel]
    return counts, partners, shared


__all__ = ["layout_2d", "cofiring", "cosine_knn", "umap_module", "numba_cache_dir", "compile_layout", "LAYOUTS", "TOP_COFIRING"]
