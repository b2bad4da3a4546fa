"""Crystals among feature vectors: quadruples ``(a, b, c, d)`` with ``b - a ≈ d - c``.

5. :func:`find_crystals` — unlabeled quadruples of SAE features (decoder rows): candidate pairs are
   each feature with its ``k`` nearest features (cosine); the normalised difference of every
   candidate pair is matched to the other candidate differences (either sign) — exactly by chunked
   products, in a seeded random projection, or approximately with pynndescent — and every match is
   rescored exactly in the full space.  ``mode="exhaustive"`` checks all pairs of features (small
   sets only; the reference the ANN search is tested against).
   :func:`crystal_null` runs the same search on a Gaussian cloud of the same mean and covariance;
   :func:`planted_crystals` and :func:`crystal_recall` are for tests and benchmarks.

All tuning parameters are in :class:`CrystalParams`; the result is a :class:`CrystalResult` whose
quadruples are numpy arrays (:class:`Quadruples`) and whose :meth:`CrystalResult.rows` are the
``crystals.csv`` records (:data:`CRYSTAL_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, Result, check_choice, check_float, check_int
from featuregeo.core.util import resolve_rng, say, seed_sequence, unit_rows
from featuregeo.tl.atoms.splits import duplicate_groups, neighbours_beyond_duplicates

CRYSTAL_COLUMNS = ("rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score")
MODES = ("ann", "exhaustive")
BACKENDS = ("auto", "brute", "projected", "pynndescent")
KINDS = ("parallelogram", "trapezoid")


# --------------------------------------------------------------------------------------------
# parameters and results


@dataclass(frozen=True)
class CrystalParams(Params):
    """Parameters of the crystal search.

    Parameters
    ----------
    mode : {"ann", "exhaustive"}, default="ann"
        ``"ann"``: candidate pairs are each feature with its ``k`` nearest features (cosine); each
        candidate pair's normalised difference is matched to the other candidate differences (either
        sign), see ``backend``; every match is rescored exactly in the full space.
        ``"exhaustive"``: all pairs of features, all matches, exact (at most ``max_exhaustive`` features).
    k : int, default=10
        Nearest neighbours per feature that make the candidate pairs.
    match_k : int, default=10
        Nearest differences per difference (pynndescent backend only).
    min_cosine : float, default=0.4
        Keep quadruples whose two differences have cosine >= this (after orienting them); in (0, 1].
    parallelogram_ratio : float, default=0.8
        ``length_ratio`` (shorter / longer side) at or above which a crystal is a parallelogram.
    min_rung : float, default=0.25
        Drop quadruples whose shorter rung (``|c - a|`` or ``|d - b|``) is below this fraction of the
        longer side (a nearly flat quadruple).  Was 0.5, which dropped long-sided crystals after
        normalisation (side 3.0: rung / side = 0.38).
    duplicate_cosine : float, default=0.95
        Rows at or above this cosine are copies of one split feature: they are skipped when choosing
        each feature's ``k`` candidate neighbours, a rung joining two of them makes a degenerate
        triangle (``x - a`` and ``y - c`` are parallel for any ``x, y`` when ``c ≈ a``) and is dropped,
        and results are kept once per group of copies (the best).
    duplicate_depth : int, default=32
        Extra neighbours searched so that ``k`` non-copies remain after skipping copies.
    max_results : int, default=200
        Quadruples returned, best score (cosine) first.
    normalize : bool, default=True
        Scale rows to unit norm first (SAE decoder norms are arbitrary per feature).
    remove_pcs : int, default=0
        Project out the top principal components of the rows first (a PC-filtered space).
    ann_dim : int, default=256
        Dimension of the seeded Gaussian random projection (Johnson-Lindenstrauss) used to match
        differences by the ``projected`` and ``pynndescent`` backends.
    backend : {"auto", "brute", "projected", "pynndescent"}, default="auto"
        How differences are matched in ANN mode.  ``"brute"``: exact chunked products in the full
        space.  ``"projected"``: the same in the random projection with threshold
        ``min_cosine - projection_margin``.  ``"pynndescent"``: the ``match_k`` approximate nearest
        differences of each (its numba compilation costs about a minute per process).  ``"auto"``:
        brute when cheap (pairs² x d <= 4e11), pynndescent above ``pynndescent_above`` candidate
        pairs, projected in between.
    projection_margin : float, default=0.15
        Slack for the random projection's error (see ``backend``).
    pynndescent_above : int, default=400000
    max_exhaustive : int, default=400
        Largest number of features accepted by ``mode="exhaustive"``.
    n_examples : int, default=6
        Top quadruples drawn in their own plane (:attr:`CrystalResult.examples`).
    seed : int, default=0
        Seeds the random projection, the PCA and pynndescent.
    """

    mode: str = "ann"
    k: int = 10
    match_k: int = 10
    min_cosine: float = 0.4
    parallelogram_ratio: float = 0.8
    min_rung: float = 0.25
    duplicate_cosine: float = 0.95
    duplicate_depth: int = 32
    max_results: int = 200
    normalize: bool = True
    remove_pcs: int = 0
    ann_dim: int = 256
    backend: str = "auto"
    projection_margin: float = 0.15
    pynndescent_above: int = 400_000
    max_exhaustive: int = 400
    n_examples: int = 6
    seed: int = 0

    def validate(self) -> CrystalParams:
        check_choice("crystal mode", self.mode, MODES)
        check_choice("crystal backend", self.backend, BACKENDS)
        for name in ("k", "match_k", "max_results", "ann_dim", "pynndescent_above", "max_exhaustive"):
            check_int(f"crystal {name}", getattr(self, name), minimum=1)
        check_int("crystal n_examples", self.n_examples, minimum=0)
        check_int("crystal remove_pcs", self.remove_pcs, minimum=0)
        check_int("crystal seed", self.seed, minimum=0)
        check_float("crystal min_cosine", self.min_cosine, low=0.0, high=1.0, low_open=True)
        check_float("crystal parallelogram_ratio", self.parallelogram_ratio, low=0.0, high=1.0)
        check_float("crystal min_rung", self.min_rung, low=0.0)
        check_float("crystal duplicate_cosine", self.duplicate_cosine, low=0.0, high=1.0, low_open=True)
        check_int("crystal duplicate_depth", self.duplicate_depth, minimum=0)
        check_float("crystal projection_margin", self.projection_margin, low=0.0, high=1.0)
        if not isinstance(self.normalize, bool):
            raise InputError(f"crystal normalize: expected True or False. Got {self.normalize!r} instead.")
        return self


@dataclass
class Quadruples:
    """Crystals as parallel arrays, best first.

    Attributes
    ----------
    a, b, c, d : ndarray
        Int64 feature ids (the original ids, not row numbers): ``b - a ≈ d - c``.
    cosine : ndarray
        cos(b - a, d - c), in [min_cosine, 1].
    length_ratio : ndarray
        Shorter side / longer side, in (0, 1].
    kind : ndarray
        Strings: ``"parallelogram"`` (``length_ratio >= parallelogram_ratio``) or ``"trapezoid"``.
    score : ndarray
        The ranking score (the cosine).
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    cosine: np.ndarray
    length_ratio: np.ndarray
    kind: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(np.asarray(self.a).size)

    @classmethod
    def empty(cls) -> Quadruples:
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return cls(a=i, b=i.copy(), c=i.copy(), d=i.copy(), cosine=f, length_ratio=f.copy(),
                   kind=np.zeros(0, dtype="<U13"), score=f.copy())


@dataclass
class CrystalExample:
    """One top crystal drawn in the plane of its two sides (``a`` at the origin).

    Attributes
    ----------
    ids : list of int
        Feature ids ``a, b, c, d``.
    xy : ndarray
        ``[4, 2]`` coordinates of the four points.
    cosine, length_ratio : float
    """

    ids: list[int]
    xy: np.ndarray
    cosine: float
    length_ratio: float


@dataclass
class CrystalResult(Result):
    """Crystals found among feature vectors (one layer).

    Attributes
    ----------
    params : CrystalParams
    quadruples : Quadruples
        The crystals found (at most ``params.max_results``), best first.
    examples : list of CrystalExample
    layer : int or None
    n_features : int
        Rows searched.
    n_candidate_pairs : int
        Feature pairs whose differences were matched.
    n_raw_matches, n_distinct : int
        Matches before rescoring, and those with four distinct features.
    n_matches : int
        Quadruples passing ``min_cosine`` and ``min_rung`` after exact rescoring (before ``max_results``).
    backend : str
        ``"exact"``, ``"projected"`` or ``"pynndescent"``.
    ann_dim : int or None
        The random projection's dimension, when one was used.
    """

    kind = "crystals"
    params: CrystalParams
    quadruples: Quadruples
    examples: list[CrystalExample] = field(default_factory=list)
    layer: int | None = None
    n_features: int = 0
    n_candidate_pairs: int = 0
    n_raw_matches: int = 0
    n_distinct: int = 0
    n_matches: int = 0
    backend: str = ""
    ann_dim: int | None = None

    def __len__(self) -> int:
        return len(self.quadruples)

    def rows(self) -> list[dict[str, Any]]:
        """One record per crystal with the columns :data:`CRYSTAL_COLUMNS` (the ``crystals.csv`` rows)."""
        q = self.quadruples
        return [{"rank": i + 1, "layer": self.layer, "a": int(q.a[i]), "b": int(q.b[i]), "c": int(q.c[i]),
                 "d": int(q.d[i]), "cosine": float(q.cosine[i]), "length_ratio": float(q.length_ratio[i]),
                 "kind": str(q.kind[i]), "score": float(q.score[i])} for i in range(len(q))]

    def canonical_set(self) -> set[tuple[int, int, int, int]]:
        """Canonical forms of the quadruples found (see :func:`canonical_quadruple`)."""
        q = self.quadruples
        return {canonical_quadruple(int(w), int(x), int(y), int(z)) for w, x, y, z in zip(q.a, q.b, q.c, q.d)}


def canonical_quadruple(a: int, b: int, c: int, d: int) -> tuple[int, int, int, int]:
    """The smallest of the equivalent forms (a,b,c,d) ~ (c,d,a,b) ~ (b,a,d,c) ~ (d,c,b,a)."""
    return min((a, b, c, d), (c, d, a, b), (b, a, d, c), (d, c, b, a))


# --------------------------------------------------------------------------------------------
# geometry


def quad_geometry(V: np.ndarray, a, b, c, d, gram: np.ndarray | None = None,
                  chunk: int = 16384) -> tuple[np.ndarray, ...]:
    """cos(b - a, d - c), |b - a|, |d - c| and the shorter rung min(|c - a|, |d - b|).

    From ``gram = V V^T`` lookups when given, else from the four rows gathered once per chunk.
    """
    if gram is not None:
        def dot(i, j):
            return gram[i, j].astype(np.float64)

        aa, bb, cc, dd = dot(a, a), dot(b, b), dot(c, c), dot(d, d)
        l1 = np.sqrt(np.maximum(aa + bb - 2 * dot(a, b), 0.0))
        l2 = np.sqrt(np.maximum(cc + dd - 2 * dot(c, d), 0.0))
        num = dot(b, d) - dot(b, c) - dot(a, d) + dot(a, c)
        rung = np.sqrt(np.maximum(np.minimum(aa + cc - 2 * dot(a, c), bb + dd - 2 * dot(b, d)), 0.0))
        return num / np.maximum(l1 * l2, 1e-30), l1, l2, rung

    def nrm(x):
        return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))

    out = np.empty((4, len(a)), dtype=np.float64)
    for s in range(0, len(a), chunk):
        sl = slice(s, s + chunk)
        Va, Vb, Vc, Vd = V[a[sl]], V[b[sl]], V[c[sl]], V[d[sl]]
        u1, u2 = Vb - Va, Vd - Vc
        out[1, sl], out[2, sl] = nrm(u1), nrm(u2)
        out[0, sl] = np.einsum("ij,ij->i", u1, u2, dtype=np.float64)
        out[3, sl] = np.minimum(nrm(Vc - Va), nrm(Vd - Vb))
    l1, l2 = out[1], out[2]
    return out[0] / np.maximum(l1 * l2, 1e-30), l1, l2, out[3]


def knn_pairs(V: np.ndarray, k: int) -> np.ndarray:
    """Unordered pairs (i < j) of each row with its ``k`` nearest rows by cosine (exact, sklearn)."""
    from sklearn.neighbors import NearestNeighbors

    Vn = unit_rows(V)
    k = min(k, V.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean").fit(Vn)
    idx = nn.kneighbors(Vn, return_distance=False)
    i = np.repeat(np.arange(V.shape[0]), idx.shape[1])
    j = idx.ravel()
    keep = i != j
    p = np.stack([np.minimum(i, j), np.maximum(i, j)], 1)[keep]
    return np.unique(p, axis=0)


# --------------------------------------------------------------------------------------------
# matching differences


def _scan_kernel(sv, t, out_r, out_c, out_s):  # pragma: no cover - compiled by numba when available
    """Upper-triangle entries (column > row) of ``sv`` with |value| >= t, in one pass; returns their count
    (entries beyond the capacity of ``out_*`` are counted but not stored)."""
    n = 0
    cap = out_r.shape[0]
    h, w = sv.shape
    for i in range(h):
        for j in range(i + 1, w):
            x = sv[i, j]
            if x >= t or x <= -t:
                if n < cap:
                    out_r[n] = i
                    out_c[n] = j
                    out_s[n] = 1 if x > 0 else -1
                n += 1
    return n


_SCAN: list = []


def _scan():
    if not _SCAN:
        try:
            import numba

            _SCAN.append(numba.njit(cache=False, nogil=True, boundscheck=False)(_scan_kernel))
        except ImportError:  # pragma: no cover - numba comes with umap-learn
            _SCAN.append(None)
    return _SCAN[0]


def match_exhaustive(U: np.ndarray, min_cos: float, chunk: int = 1024, *, use_numba: bool = True
                     ) -> tuple[np.ndarray, ...]:
    """All pairs (p < q) of rows of unit ``U`` with |cos| >= min_cos, and the sign of each cosine.

    Chunked products into a reused buffer; the hits of each block are collected in one compiled pass
    (numba) or, without numba, by numpy abs / compare / nonzero.
    """
    M = U.shape[0]
    chunk = max(1, min(chunk, M))
    sim = np.empty((chunk, M), dtype=U.dtype)
    scan = _scan() if use_numba else None
    if scan is None:
        mag = np.empty((chunk, M), dtype=U.dtype)
        hit = np.empty((chunk, M), dtype=bool)
    cap = 1 << 16
    buf = [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8)]
    P, Q, S = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, U.dtype)]
    for s in range(0, M, chunk):
        h, w = min(chunk, M - s), M - s  # only q >= p: each pair of pairs once
        sv = sim[:h, :w]
        np.matmul(U[s:s + h], U[s:].T, out=sv)
        if scan is not None:
            n = scan(sv, U.dtype.type(min_cos), *buf)
            if n > cap:
                cap = 1 << int(n - 1).bit_length()
                buf = [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8)]
                scan(sv, U.dtype.type(min_cos), *buf)
            r, c, sg = buf[0][:n].copy(), buf[1][:n].copy(), buf[2][:n].astype(sv.dtype)
        else:
            mv, hv = mag[:h, :w], hit[:h, :w]
            np.abs(sv, out=mv)
            np.greater_equal(mv, min_cos, out=hv)
            r, c = np.nonzero(hv)
            ok = c > r
            r, c = r[ok], c[ok]
            sg = np.sign(sv[r, c])
        P.append(r + s)
        Q.append(c + s)
        S.append(sg)
    return np.concatenate(P), np.concatenate(Q), np.concatenate(S)


def match_pynndescent(U: np.ndarray, match_k: int, seed: int) -> tuple[np.ndarray, ...]:
    """The ``match_k`` approximate nearest rows of ``U`` or ``-U`` for each row (pynndescent)."""
    import pynndescent

    M = U.shape[0]
    both = np.concatenate([U, -U]).astype(np.float32)
    index = pynndescent.NNDescent(both, metric="dot", n_neighbors=match_k + 1, random_state=seed,
                                  low_memory=True, compressed=False, n_jobs=1)
    nbr = index.neighbor_graph[0][:M]
    rows = np.repeat(np.arange(M), nbr.shape[1])
    cols = nbr.ravel()
    ok = cols >= 0
    rows, cols = rows[ok], cols[ok]
    sign = np.where(cols >= M, -1.0, 1.0)
    cols = np.where(cols >= M, cols - M, cols)
    return rows, cols, sign


def choose_backend(params: CrystalParams, n_pairs: int, d: int) -> str:
    """``"exact"``, ``"projected"`` or ``"pynndescent"`` for ``n_pairs`` candidate pairs in ``d`` dimensions."""
    if params.mode == "exhaustive":
        return "exact"
    if params.backend == "auto":
        if n_pairs > params.pynndescent_above:
            return "pynndescent"
        return "exact" if n_pairs * n_pairs * d <= 4e11 or d <= params.ann_dim else "projected"
    return {"brute": "exact"}.get(params.backend, params.backend)


def _match(V: np.ndarray, pa: np.ndarray, pb: np.ndarray, params: CrystalParams):
    """Matches between candidate differences: (P, Q, sign, projected rows or None, backend)."""
    how = choose_backend(params, len(pa), V.shape[1])
    Vr = None
    if how in ("pynndescent", "projected") and V.shape[1] > params.ann_dim:
        # differences are linear in the rows: project the rows once (seeded Gaussian, Johnson-Lindenstrauss)
        rng = seed_sequence(params.seed, 0)
        R = rng.standard_normal((V.shape[1], params.ann_dim)).astype(np.float32) / np.sqrt(params.ann_dim)
        Vr = V @ R
    U = unit_rows((V if Vr is None else Vr)[pb] - (V if Vr is None else Vr)[pa])
    if how == "pynndescent":
        P, Q, S = match_pynndescent(U, params.match_k, params.seed)
    elif Vr is not None:  # all matches in the projection, with a margin for its error; rescored below
        P, Q, S = match_exhaustive(U, max(0.0, params.min_cosine - params.projection_margin), chunk=512)
        how = "projected"
    else:  # exact: every match of every candidate pair above min_cosine (all pairs in exhaustive mode)
        P, Q, S = match_exhaustive(U, params.min_cosine)
        how = "exact"
    return P, Q, S, Vr, how


def _orient_dedupe(pa, pb, P, Q, S, n: int) -> tuple[np.ndarray, int]:
    """Quadruples [m, 4] from matched pairs: oriented (S < 0 flips pair q), four distinct features,
    one canonical form each, deduplicated; and the number with distinct features."""
    a, b = pa[P], pb[P]
    c = np.where(S > 0, pa[Q], pb[Q])
    d = np.where(S > 0, pb[Q], pa[Q])
    distinct = (a != c) & (a != d) & (b != c) & (b != d)
    a, b, c, d = a[distinct], b[distinct], c[distinct], d[distinct]
    if a.size == 0:
        return np.zeros((0, 4), dtype=np.int64), 0
    forms = np.stack([np.stack(f, 1) for f in ((a, b, c, d), (c, d, a, b), (b, a, d, c), (d, c, b, a))], 0)
    k1 = forms[:, :, 0] * n + forms[:, :, 1]  # lexicographic (k1, k2): no int64 overflow for large n
    k2 = forms[:, :, 2] * n + forms[:, :, 3]
    best = np.argmin(np.where(k1 == k1.min(0), k2, np.iinfo(np.int64).max), axis=0)
    quad = forms[best, np.arange(forms.shape[1])]
    return np.unique(quad, axis=0).astype(np.int64), int(a.size)


def _rescore(V: np.ndarray, Vr: np.ndarray | None, quad: np.ndarray, params: CrystalParams,
             groups: np.ndarray | None = None):
    """Exact cosine, length ratio and rung test of each quadruple (after a cheap prefilter in the
    projection, with margins for its error, when one was used).  Returns the kept rows and scores."""
    a, b, c, d = (quad[:, i] for i in range(4))
    if Vr is not None and len(a):
        cos_r, l1r, l2r, rung_r = quad_geometry(Vr, a, b, c, d)
        pre = ((cos_r >= params.min_cosine - params.projection_margin)
               & (rung_r >= (params.min_rung - 0.1) * np.maximum(l1r, l2r)))
        a, b, c, d = a[pre], b[pre], c[pre], d[pre]
    gram = (V @ V.T) if V.shape[0] <= 4096 else None  # small sets: every dot product is a lookup
    cos, l1, l2, rung = quad_geometry(V, a, b, c, d, gram)
    ratio = np.minimum(l1, l2) / np.maximum(np.maximum(l1, l2), 1e-30)
    # a near-duplicate a ~ c makes (a, x, c, y) "parallel" for any x, y: a triangle, not a crystal
    keep = (cos >= params.min_cosine) & (rung >= params.min_rung * np.maximum(l1, l2))
    if groups is not None:  # a rung inside one group of split-feature copies: a triangle, not a crystal
        keep &= (groups[a] != groups[c]) & (groups[b] != groups[d])
    return tuple(x[keep] for x in (a, b, c, d, cos, ratio, np.maximum(l1, l2)))


def _example(V: np.ndarray, ids: np.ndarray, rows: Sequence[int], cos: float, ratio: float) -> CrystalExample:
    pts = V[list(rows)].astype(np.float64)
    e1 = pts[1] - pts[0]
    e1 /= max(np.linalg.norm(e1), 1e-30)
    e2 = pts[2] - pts[0]
    e2 -= (e2 @ e1) * e1
    e2 /= max(np.linalg.norm(e2), 1e-30)
    rel = pts - pts[0]
    return CrystalExample(ids=[int(ids[j]) for j in rows], xy=np.stack([rel @ e1, rel @ e2], 1),
                          cosine=float(cos), length_ratio=float(ratio))


def prepare_rows(vectors: np.ndarray, params: CrystalParams, feature_ids: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Checked float32 rows (normalised and PC-filtered as ``params`` says) and their feature ids."""
    V = np.asarray(vectors, dtype=np.float32)
    if V.ndim != 2 or V.shape[0] < 4:
        raise InputError(f"vectors: expected [n_features >= 4, d]. Got shape {V.shape} instead.")
    if not np.isfinite(V).all():
        raise InputError("vectors: contain NaN/inf; expected finite rows")
    n = V.shape[0]
    ids = np.arange(n, dtype=np.int64) if feature_ids is None else np.asarray(feature_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InputError(f"feature_ids: expected {n} ids. Got shape {ids.shape} instead.")
    if params.mode == "exhaustive" and n > params.max_exhaustive:
        raise InputError(f"crystal mode: 'exhaustive' checks all {n * (n - 1) // 2} pairs of features against each "
                         f"other; expected n_features <= {params.max_exhaustive}, or mode='ann'. Got {n} instead.")
    if params.normalize:
        V = unit_rows(V)
    if params.remove_pcs:
        if params.remove_pcs >= min(V.shape):
            raise InputError(f"crystal remove_pcs: expected fewer than {min(V.shape)} components for "
                             f"{V.shape[0]} x {V.shape[1]} rows. Got {params.remove_pcs} instead.")
        from sklearn.decomposition import PCA

        comps = PCA(n_components=int(params.remove_pcs), svd_solver="randomized",
                    random_state=params.seed).fit(V).components_
        V = (V - (V @ comps.T) @ comps).astype(np.float32)
    return V, ids


def find_crystals(vectors: np.ndarray, params: CrystalParams | None = None, *, feature_ids: np.ndarray | None = None,
                  progress=None) -> CrystalResult:
    """Search feature vectors (e.g. SAE decoder rows) for parallelograms and trapezoids.

    Parameters
    ----------
    vectors : ndarray
        ``[n_features, d]`` finite rows, at least 4.
    params : CrystalParams, optional
        Default ``CrystalParams()``.
    feature_ids : ndarray, optional
        Int ``[n_features]``: original ids reported in the output (default ``0..n-1``).
    progress : callable, optional
        Called with one line of text per stage.

    Returns
    -------
    CrystalResult

    Examples
    --------
    >>> X, planted = planted_crystals(n=500, d=64, n_crystals=10)
    >>> res = find_crystals(X, CrystalParams(backend="brute"))
    >>> crystal_recall(res, planted) >= 0.9
    True
    """
    params = (params or CrystalParams()).validate()
    V, ids = prepare_rows(vectors, params, feature_ids)
    n = V.shape[0]
    pairs, dups = neighbours_beyond_duplicates(V, params.k, params.duplicate_cosine, params.duplicate_depth)
    groups = duplicate_groups(n, dups)
    if params.mode == "exhaustive":
        iu, ju = np.triu_indices(n, 1)
        pairs = np.stack([iu, ju], 1).astype(np.int64)
    pa, pb = pairs[:, 0], pairs[:, 1]
    say(progress, f"crystals: {n} features ({n - int(groups.max()) - 1} split-feature copies), "
                  f"{len(pairs)} candidate pairs")
    P, Q, S, Vr, how = _match(V, pa, pb, params)
    quad, n_distinct = _orient_dedupe(pa, pb, P, Q, S, n)
    a, b, c, d, cos, ratio, side = _rescore(V, Vr, quad, params, groups)
    order = np.lexsort((-ratio, -cos))[: params.max_results] if len(cos) else np.zeros(0, dtype=np.int64)
    if len(cos):
        # one result per set of four corners (groups of split-feature copies counted once): a parallelogram
        # is found through both pairs of opposite sides; keep the view with the shorter sides
        sets = np.sort(groups[np.stack([a, b, c, d], 1)], axis=1)
        _, inv = np.unique(sets, axis=0, return_inverse=True)
        inv = inv.ravel()
        by_set = np.lexsort((side, inv))
        reps = by_set[np.r_[True, inv[by_set][1:] != inv[by_set][:-1]]]
        order = reps[np.lexsort((-ratio[reps], -cos[reps]))][: params.max_results]
    kind = np.where(ratio[order] >= params.parallelogram_ratio, KINDS[0], KINDS[1]).astype("<U13")
    quads = Quadruples(a=ids[a[order]], b=ids[b[order]], c=ids[c[order]], d=ids[d[order]],
                       cosine=cos[order].astype(np.float64), length_ratio=ratio[order].astype(np.float64),
                       kind=kind, score=cos[order].astype(np.float64))
    examples = [_example(V, ids, (a[i], b[i], c[i], d[i]), cos[i], ratio[i]) for i in order[: params.n_examples]]
    say(progress, f"crystals: {len(cos)} matches ({how}), kept {len(order)}")
    return CrystalResult(params=params, quadruples=quads, examples=examples, n_features=int(n),
                         n_candidate_pairs=len(pairs), n_raw_matches=int(P.size), n_distinct=n_distinct,
                         n_matches=len(cos), backend=how, ann_dim=params.ann_dim if Vr is not None else None)


def crystal_null(vectors: np.ndarray, params: CrystalParams | None = None, *, progress=None) -> CrystalResult:
    """The same search on a Gaussian cloud with the mean and covariance of ``vectors`` (after the
    same normalisation): how many matches a structureless cloud of that shape gives.

    The cloud is drawn from ``seed_sequence(params.seed, 1)``.
    """
    params = (params or CrystalParams()).validate()
    V = np.asarray(vectors, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] < 4:
        raise InputError(f"vectors: expected [n_features >= 4, d]. Got shape {V.shape} instead.")
    if params.normalize:
        V = unit_rows(V, dtype=np.float64)
    from featuregeo.core.util import blas_one_thread

    mu = V.mean(0)
    with blas_one_thread("blas"):  # threaded eigh spins (30x the CPU on a busy 2-core machine)
        w, Q = np.linalg.eigh(np.cov(V, rowvar=False))
    G = seed_sequence(params.seed, 1).standard_normal(V.shape)
    Z = (mu + (G * np.sqrt(np.maximum(w, 0.0))) @ Q.T).astype(np.float32)
    return find_crystals(Z, params, progress=progress)


def planted_crystals(n: int = 2000, d: int = 256, n_crystals: int = 40, *, side: float = 0.6, noise: float = 0.02,
                     trapezoid_every: int = 4, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A random unit-vector cloud with planted crystals (for tests and benchmarks).

    Each crystal takes four rows: ``a``, ``c`` random, ``b = a + v``, ``d = c + s v`` (``s = 1``, or 2
    for every ``trapezoid_every``-th crystal), plus noise; ``|v| = side``.

    Returns
    -------
    rows : ndarray
        float32 ``[n, d]``.
    quadruples : list of (int, int, int, int)
        Row numbers ``(a, b, c, d)`` of the planted crystals.
    """
    if 4 * n_crystals > n:
        raise InputError(f"n_crystals: expected at most n / 4 = {n // 4}. Got {n_crystals} instead.")
    rng = resolve_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    perm = rng.permutation(n)
    quads = []
    for t in range(n_crystals):
        a, b, c, dd = (int(x) for x in perm[4 * t: 4 * t + 4])
        v = rng.standard_normal(d).astype(np.float32) * (side / np.sqrt(d))
        s = 2.0 if trapezoid_every and t % trapezoid_every == trapezoid_every - 1 else 1.0
        X[b] = X[a] + v + rng.standard_normal(d).astype(np.float32) * (noise / np.sqrt(d))
        X[dd] = X[c] + s * v + rng.standard_normal(d).astype(np.float32) * (noise / np.sqrt(d))
        quads.append((a, b, c, dd))
    return X, quads


def crystal_recall(result: CrystalResult, planted: Sequence[tuple[int, int, int, int]],
                   groups: np.ndarray | None = None) -> float:
    """Fraction of planted quadruples found (up to the equivalences of :func:`canonical_quadruple`).

    With ``groups`` (a group id per row, e.g. split-feature copies), a quadruple of any copies of the
    planted corners counts.
    """
    if groups is None:
        found = result.canonical_set()
        return sum(canonical_quadruple(*(int(x) for x in q)) in found for q in planted) / max(1, len(planted))
    g = np.asarray(groups)
    found = {canonical_quadruple(*(int(g[x]) for x in q)) for q in result.canonical_set()}
    return sum(canonical_quadruple(*(int(g[x]) for x in q)) in found for q in planted) / max(1, len(planted))


def planted_clustered_crystals(n: int = 2000, d: int = 256, n_crystals: int = 20, *, cluster_size: int = 12,
                               spread: float = 0.15, side: float = 0.6, seed: int = 0
                               ) -> tuple[np.ndarray, list[tuple[int, int, int, int]], np.ndarray]:
    """Planted crystals whose every corner sits inside a tight group of ``cluster_size`` split features.

    :func:`planted_crystals` rows, then ``cluster_size - 1`` copies of every corner (the corner plus
    Gaussian noise of norm about ``spread`` times its own) appended at the end.

    Returns
    -------
    rows, quadruples, groups
        ``groups[i]`` is the row number of the corner that row ``i`` copies (itself for others).
    """
    X, quads = planted_crystals(n, d, n_crystals, side=side, seed=seed)
    rng = seed_sequence(seed, 17)
    corners = np.array(sorted({x for q in quads for x in q}), dtype=np.int64)
    base = np.repeat(corners, cluster_size - 1)
    noise = rng.standard_normal((base.size, d)).astype(np.float32) / np.sqrt(d)
    copies = X[base] + spread * np.linalg.norm(X[base], axis=1, keepdims=True) * noise
    groups = np.concatenate([np.arange(n, dtype=np.int64), base])
    return np.vstack([X, copies]).astype(np.float32), quads, groups


__all__ = [
    "CRYSTAL_COLUMNS",
    "CrystalExample",
    "CrystalParams",
    "CrystalResult",
    "Quadruples",
    "canonical_quadruple",
    "choose_backend",
    "crystal_null",
    "crystal_recall",
    "find_crystals",
    "knn_pairs",
    "match_exhaustive",
    "match_pynndescent",
    "planted_crystals",
    "planted_clustered_crystals",
    "prepare_rows",
    "quad_geometry",
]
