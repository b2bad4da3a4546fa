"""Stage 3 of lobes: the normalised-Laplacian spectral embedding and the n_clusters sweep.

:func:`spectral_embedding` / :class:`SpectralSweep` — the embedding is computed ONCE per affinity
with as many eigenvectors as the largest ``n_clusters`` needs, and every ``n_clusters`` reuses its
leading columns with seeded k-means (what scikit-learn's
``SpectralClustering(affinity="precomputed", assign_labels="kmeans")`` does per ``n_clusters``).

*Embedding scale.*  As scikit-learn: eigenvectors ``v`` of ``D^-1/2 W D^-1/2`` (largest eigenvalues
first, the trivial one included) scaled to ``D^-1/2 v``, with a deterministic sign.  scikit-learn
does not row-normalise; ``row_normalize=True`` gives the Ng-Jordan-Weiss variant.

References
----------
von Luxburg, "A tutorial on spectral clustering", Statistics and Computing 17 (2007).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from featuregeo.core.errors import InputError, NotFittedError
from featuregeo.core.results import check_choice
from featuregeo.core.util import resolve_rng
from featuregeo.tl.lobes.affinity import Affinity
from featuregeo.tl.lobes.common import (DEFAULT_N_CLUSTERS, ArrayEq, check_n_clusters, check_seed, int_at_least, seed_int,
                                        threads_for)

#: above this share of eigenvectors (K * 200 >= n) a dense eigensolver beats ARPACK
ARPACK_MAX_SHARE = 1 / 200
#: dense eigenproblems up to this size run on one BLAS thread
SMALL_EIGH = 2048
#: ``kmeans="auto"`` runs full k-means (``n_init`` restarts) up to this many clusters, the fast one above
KMEANS_FULL_MAX = 64
#: the fast k-means seeds k-means++ on a sample of ``max(FAST_SAMPLE_MIN, FAST_SAMPLE_PER_CLUSTER * k)`` points
FAST_SAMPLE_MIN = 10_000
FAST_SAMPLE_PER_CLUSTER = 16
#: Lloyd iterations of the fast k-means
FAST_MAX_ITER = 100


@dataclass(eq=False)
class EmbeddingSummary(ArrayEq):
    """The spectral embedding of one affinity of one layer, without its vectors.

    Attributes
    ----------
    affinity : str
        The affinity embedded (``"geometry"`` for decoder angles).
    n : int
        Points embedded.
    n_components : int
        Eigenvectors computed (the largest ``n_clusters``).
    solver : {"dense", "arpack"}
    n_isolated : int
        Points without any edge (degree 0).
    seconds : float
    eigenvalues : ndarray of float64
        The leading (at most 16) eigenvalues of ``D^-1/2 W D^-1/2``, largest first.
    """

    affinity: str
    n: int
    n_components: int
    solver: str
    n_isolated: int
    seconds: float
    eigenvalues: np.ndarray


@dataclass
class Embedding:
    """Spectral embedding: ``vectors[:, :k]`` is what spectral clustering into k clusters uses."""

    vectors: np.ndarray
    eigenvalues: np.ndarray
    solver: str
    n_isolated: int
    seconds: float

    def summary(self, affinity: str) -> "EmbeddingSummary":
        """Everything but the vectors (and at most 16 eigenvalues), for a result."""
        return EmbeddingSummary(affinity=affinity, n=int(self.vectors.shape[0]),
                                n_components=int(self.vectors.shape[1]), solver=self.solver,
                                n_isolated=int(self.n_isolated), seconds=float(self.seconds),
                                eigenvalues=np.asarray(self.eigenvalues[:16], dtype=np.float64))


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
    check_choice("solver", solver, ("auto", "dense", "arpack"))
    is_sparse = sparse.issparse(affinity_matrix)
    W = affinity_matrix.tocsr().astype(np.float64) if is_sparse else np.asarray(affinity_matrix)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise InputError(f"affinity: expected a square matrix. Got shape {W.shape} instead.")
    n = W.shape[0]
    k = int_at_least("n_components", n_components, 1, n)
    _check_affinity_values(W)
    if solver == "auto":
        solver = "arpack" if (is_sparse or k < n * ARPACK_MAX_SHARE) and k < n - 1 and n > 64 else "dense"
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
        with threads_for(0 if n <= SMALL_EIGH else np.inf):
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
        # Lanczos is BLAS-2 work on one vector at a time: one BLAS thread loses little when idle and
        # avoids the 10x-plus cost of spinning BLAS threads on a busy machine (measured: 3.5 s vs 56 s)
        with threads_for(0 if is_sparse else float(n) * n):
            w, v = sla.eigsh(op, k=k, which="LA", v0=v0, tol=0.0)
    order = np.argsort(-w, kind="stable")
    w, v = w[order], v[:, order]
    emb = (v * dinv[:, None]).astype(np.float32)
    sign = np.sign(emb[np.abs(emb).argmax(axis=0), np.arange(k)])
    sign[sign == 0] = 1
    emb *= sign
    return Embedding(vectors=emb, eigenvalues=np.asarray(w, dtype=np.float64), solver=solver,
                     n_isolated=int(isolated.sum()), seconds=time.perf_counter() - t0)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..m-1 by decreasing size (ties: first occurrence)."""
    uniq, first, inv, size = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -size))
    remap = np.empty(uniq.size, dtype=np.int32)
    remap[order] = np.arange(uniq.size, dtype=np.int32)
    return remap[inv.ravel()]


def _kmeans_threads(work: float):
    """Thread limit of k-means: :func:`threads_for`, and one thread when the machine is busy.

    scikit-learn's OpenMP threads spin while they wait; with more runnable processes than cores
    a 2-thread k-means at 512 clusters took 54 s against 2.8 s on one thread (measured, load 19 on
    2 cores).  The labels do not depend on the thread count (scikit-learn's chunked reductions).
    """
    import os

    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    except OSError:  # pragma: no cover - no load average on this platform
        busy = False
    return threads_for(0 if busy else work)


def fast_kmeans(x: np.ndarray, k: int, *, seed: int = 0, max_iter: int = FAST_MAX_ITER) -> Any:
    """k-means for many clusters: k-means++ seeds from a seeded sample, then one Lloyd run on all points.

    scikit-learn's k-means++ evaluates ``2 + log k`` candidate centres against every point for each
    of the ``k`` centres, and ``KMeans`` repeats everything ``n_init`` times; at 1024 clusters on
    65k points that seeding alone is minutes.  Seeding on ``max(FAST_SAMPLE_MIN, 16 k)`` sampled
    points and running Lloyd once (at most ``max_iter`` iterations) keeps the Lloyd refinement on
    every point.  Returns the fitted ``sklearn.cluster.KMeans``.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    x = np.asarray(x)
    n = x.shape[0]
    m = min(n, max(FAST_SAMPLE_MIN, FAST_SAMPLE_PER_CLUSTER * k))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    with warnings.catch_warnings(), _kmeans_threads(float(n) * k * x.shape[1]):
        warnings.simplefilter("ignore")
        centers, _ = kmeans_plusplus(x[sample], k, random_state=seed_int(seed, 1))
        return KMeans(n_clusters=k, init=centers, n_init=1, max_iter=max_iter, random_state=seed_int(seed, 2)).fit(x)


def kmeans_labels(x: np.ndarray, k: int, *, seed: int, n_init: int = 3, fast: bool = False) -> np.ndarray:
    """k-means labels of the rows of ``x``: :func:`fast_kmeans`, or ``KMeans`` with ``n_init`` restarts."""
    from sklearn.cluster import KMeans

    if fast:
        return fast_kmeans(x, k, seed=seed).labels_
    with warnings.catch_warnings(), _kmeans_threads(float(x.shape[0]) * k * x.shape[1]):
        warnings.simplefilter("ignore")  # "fewer distinct clusters than n_clusters": sizes say so
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)


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
        Computed once, with ``max(n_clusters)`` components (at most ``max_components``).
    labels_ : dict int -> ndarray of int32
        Lobe labels per ``n_clusters``, numbered by decreasing lobe size.
    n_clusters_ : list of int
        The values clustered.
    skipped_ : list of int
    kmeans_ : dict int -> str
        ``"full"`` or ``"fast"``: the k-means used per ``n_clusters``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.kron(np.eye(2), np.ones((5, 5)))
    >>> SpectralSweep([2]).fit(W).labels_[2].tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """

    def __init__(self, n_clusters: Sequence[int] = DEFAULT_N_CLUSTERS, *, n_init: int = 3,
                 row_normalize: bool = False, solver: str = "auto", seed: int = 0,
                 max_components: int | None = None, kmeans: str = "full"):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.row_normalize = row_normalize
        self.solver = solver
        self.seed = seed
        self.max_components = max_components
        self.kmeans = kmeans

    def fit(self, affinity: Affinity | Any, *, overwrite: bool = False) -> "SpectralSweep":
        W = affinity.matrix if isinstance(affinity, Affinity) else affinity
        ks = check_n_clusters(self.n_clusters)
        n_init = int_at_least("n_init", self.n_init, 1)
        seed = check_seed(self.seed)
        check_choice("kmeans", self.kmeans, ("full", "fast", "auto"))
        cap = None if self.max_components is None else int_at_least("max_components", self.max_components, 1)
        n = W.shape[0]
        self.n_clusters_ = [k for k in ks if k < n]
        self.skipped_ = [k for k in ks if k >= n]
        if not self.n_clusters_:
            raise InputError(f"n_clusters: every value is >= the {n} usable features; expected values below {n}. "
                             f"Got {ks} instead.")
        n_comp = max(self.n_clusters_) if cap is None else min(max(self.n_clusters_), cap)
        self.embedding_ = spectral_embedding(W, n_comp, seed=seed, solver=self.solver, overwrite=overwrite)
        self.labels_ = {}
        self.kmeans_ = {}
        for k in self.n_clusters_:
            x = np.ascontiguousarray(self.embedding_.vectors[:, :min(k, n_comp)])
            if self.row_normalize:
                nr = np.linalg.norm(x, axis=1, keepdims=True)
                nr[nr == 0] = 1.0
                x = x / nr
            fast = self.kmeans == "fast" or (self.kmeans == "auto" and k > KMEANS_FULL_MAX)
            self.kmeans_[k] = "fast" if fast else "full"
            self.labels_[k] = canonical(kmeans_labels(x, k, seed=seed_int(seed, 11, k), n_init=n_init, fast=fast))
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


__all__ = ["Embedding", "EmbeddingSummary", "spectral_embedding", "SpectralSweep", "spectral_sweep", "canonical",
           "fast_kmeans", "kmeans_labels", "KMEANS_FULL_MAX"]
