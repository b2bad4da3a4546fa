"""Stage 2 of lobes: affinities between features, from co-occurrence counts or decoder geometry.

* :func:`affinity` — phi, Jaccard, Dice, overlap and simple matching from the counts of
  :func:`~featuregeo.tl.lobes.cooccurrence.cooccurrence`;
* :func:`angular_affinity` — ``1 - arccos(cos)/pi`` between decoder rows.

Features that never fire or fire in every block are excluded and counted; the diagonal is set to 0
(self-pairs carry no co-occurrence information); no NaN is produced.

*Negative phi.*  phi lies in [-1, 1].  ``phi_shift=True`` (default, the paper's convention) uses
``phi + 1`` in [0, 2]; ``phi_shift=False`` clips negative phi to 0 and counts the clipped pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from featuregeo.core.errors import InputError
from featuregeo.core.results import check_choice
from featuregeo.core.util import unit_rows
from featuregeo.tl.lobes.common import AFFINITIES, DEFAULT_TOP_K, int_at_least
from featuregeo.tl.lobes.cooccurrence import Cooccurrence, pair_scores


@dataclass
class AffinitySummary:
    """One affinity of one layer, without its matrix.

    Attributes
    ----------
    kind : str
        The affinity (``"phi"``, ..., or ``"geometry"`` for the angular one).
    n : int
        Features in the graph.
    never_fired, always_fired : int
        Features left out because they fired in no / every training block.
    n_clipped : int
        Pairs whose negative phi was clipped to 0 (``phi_shift=False`` only).
    sparse : bool
        Whether the graph is a top-k graph (top-k counts, or ``graph="topk"``).
    note : str
        The convention used, in words.
    """

    kind: str
    n: int
    never_fired: int = 0
    always_fired: int = 0
    n_clipped: int = 0
    sparse: bool = False
    note: str = ""


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

    def summary(self) -> "AffinitySummary":
        """Everything but the matrix, for a result."""
        return AffinitySummary(kind=self.kind, n=self.n, never_fired=int(self.excluded.get("never_fired", 0)),
                               always_fired=int(self.excluded.get("always_fired", 0)), n_clipped=int(self.n_clipped),
                               sparse=bool(sparse.issparse(self.matrix)), note=self.note)


def usable_features(counts: np.ndarray, T: int) -> tuple[np.ndarray, dict]:
    """Indices of features that fire in some but not all of ``T`` blocks, and the counts of the others."""
    never = counts == 0
    always = counts >= T
    return np.flatnonzero(~never & ~always), {"never_fired": int(never.sum()), "always_fired": int(always.sum())}


def _row_topk(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int, k: int) -> sparse.csr_matrix:
    """Keep each row's ``k`` largest values, then symmetrise (union; values are symmetric).

    One sort of ``row + 0.5 * (1 - scaled value)`` (values closer than ~1e-10 of their range tie)
    instead of a two-key lexsort (tens of millions of candidate pairs at 65k features).
    """
    v64 = np.asarray(vals, dtype=np.float64)
    lo, hi = (float(v64.min()), float(v64.max())) if v64.size else (0.0, 1.0)
    key = rows.astype(np.float64) + 0.5 * (hi - v64) / (hi - lo if hi > lo else 1.0)
    order = np.argsort(key, kind="stable")
    del key, v64
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(rows.size) - start[rows]
    keep = (rank < k) & (vals > 0)
    return _symmetric(rows[keep], cols[keep], vals[keep], n)


def _symmetric(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int) -> sparse.csr_matrix:
    """float32 CSR of the union of the entries and their transposes (values are symmetric)."""
    m = sparse.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n))
    return m.maximum(m.T).tocsr()


def chunk_topk(s: np.ndarray, a: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` largest entries of each row of the block ``s`` (rows ``a:a+len(s)`` of a square
    matrix, the diagonal skipped; ``s`` is overwritten) as (rows, cols, values)."""
    m = s.shape[0]
    s[np.arange(m), np.arange(a, a + m)] = -np.inf
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.repeat(np.arange(a, a + m), k), part.ravel(), np.take_along_axis(s, part, axis=1).ravel()


class TopkCollector:
    """Collects :func:`chunk_topk` parts of the rows of an ``n x n`` affinity into its symmetrised top-k graph."""

    def __init__(self, n: int, k: int):
        self.n, self.k = n, k
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, s: np.ndarray, a: int, transform: Any = None) -> None:
        """Rows ``a:a+len(s)``; ``transform`` (monotone increasing) maps the kept values."""
        r, c, v = chunk_topk(s, a, self.k)
        if transform is not None:
            v = transform(v)
        keep = v > 0
        self.parts.append((r[keep], c[keep], v[keep].astype(np.float32)))

    def matrix(self) -> sparse.csr_matrix:
        r, c, v = (np.concatenate(x) for x in zip(*self.parts)) if self.parts else (np.zeros(0, int),) * 3
        return _symmetric(r, c, v, self.n)


def affinity(cooc: Cooccurrence, kind: str = "phi", *, phi_shift: bool = True,
             top_k: int | None = None, graph: str = "auto") -> Affinity:
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
    symmetrised — the exact k-nearest-neighbour graph of the dense affinity.  ``graph="topk"`` builds
    the same graph from dense counts, by row chunks: memory ``O(n * top_k)``, never an ``n x n``
    affinity.

    Parameters
    ----------
    cooc : Cooccurrence
    kind : {"phi", "jaccard", "dice", "overlap", "simple_matching"}, default="phi"
    phi_shift : bool, default=True
    top_k : int, optional
        Partners kept per feature in a top-k graph (default: the counts' ``top_k``, else
        :data:`~featuregeo.tl.lobes.common.DEFAULT_TOP_K`).
    graph : {"auto", "dense", "topk"}, default="auto"
        ``"auto"``: a dense matrix from dense counts, a top-k graph from top-k counts.  ``"topk"``:
        a sparse top-k graph (from either).  ``"dense"`` needs dense counts.

    Returns
    -------
    Affinity
    """
    check_choice("kind", kind, AFFINITIES)
    check_choice("graph", graph, ("auto", "dense", "topk"))
    if graph == "dense" and cooc.storage != "dense":
        raise InputError("graph: a dense affinity needs dense counts; expected graph='topk' or 'auto' with top-k "
                         "counts (or cooccurrence(storage='dense'))")
    T = cooc.n_blocks
    idx, excluded = usable_features(cooc.counts, T)
    n = idx.size
    if n < 2:
        raise InputError(f"firing: {n} usable feature(s) ({excluded['never_fired']} never fired, "
                         f"{excluded['always_fired']} fired in every block); expected at least 2")
    cnt = cooc.counts[idx]
    clipped = 0
    if cooc.storage == "dense":
        full = n == cooc.n_features
        k = min(int_at_least("top_k", top_k if top_k is not None else DEFAULT_TOP_K, 1), n - 1)
        sink = TopkCollector(n, k) if graph == "topk" else None
        out = np.empty((n, n), dtype=np.float32) if sink is None else None
        c = max(1, (64 * 2**20) // (8 * n))
        for a in range(0, n, c):
            b = min(n, a + c)
            n11 = cooc.pairs[a:b] if full else cooc.pairs[np.ix_(idx[a:b], idx)]
            s = pair_scores(kind, n11, cnt[a:b, None], cnt[None, :], T)
            s[np.arange(b - a), np.arange(a, b)] = 0.0
            if kind == "phi":
                if phi_shift:
                    s += 1.0
                    s[np.arange(b - a), np.arange(a, b)] = 0.0
                else:
                    neg = s < 0
                    clipped += int(neg.sum())
                    s[neg] = 0.0
            if sink is None:
                out[a:b] = s
            else:
                sink.add(s, a)
        note = ""
        if kind == "phi":
            note = "phi + 1 (values in [0, 2])" if phi_shift else f"negative phi clipped to 0 ({clipped} entries)"
        if sink is not None:
            out = sink.matrix()
            note = "; ".join(x for x in (f"top-{k} graph per feature by {kind} (symmetrised); absent pairs are 0",
                                         note) if x)
        return Affinity(kind=kind, matrix=out, feature_index=idx, excluded=excluded, n_clipped=clipped // 2,
                        note=note)
    if kind not in cooc.rank_by:
        raise InputError(f"kind: top-k counts were ranked by {list(cooc.rank_by)}, so the top-k graph of "
                         f"{kind!r} is not exact; expected one of those (or dense counts)")
    k = int_at_least("top_k", top_k if top_k is not None else cooc.top_k, 1)
    coo = cooc.pairs.tocoo()  # explicit zero counts included
    pos = np.full(cooc.n_features, -1, dtype=np.int64)
    pos[idx] = np.arange(n)
    r, c = pos[coo.row], pos[coo.col]
    ok = (r >= 0) & (c >= 0) & (r != c)
    r, c = r[ok], c[ok]
    s = pair_scores(kind, coo.data[ok], cnt[r], cnt[c], T)
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


def unit_decoder_rows(vectors: np.ndarray, name: str = "decoder_rows") -> np.ndarray:
    """Decoder rows scaled to unit length; non-finite or zero rows are a one-line InputError."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array [n_features, d_model]. Got shape {x.shape} instead.")
    norms = np.linalg.norm(x, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise InputError(f"{name}: expected finite, non-zero rows. Got {int((~np.isfinite(norms)).sum())} "
                         f"non-finite and {int((norms == 0).sum())} zero rows instead.")
    return unit_rows(x)


def angular_affinity(vectors: np.ndarray, *, storage: str = "dense", top_k: int = DEFAULT_TOP_K) -> Affinity:
    """Angular similarity ``1 - arccos(cos)/pi`` (in [0, 1]) between rows, zero diagonal.

    ``storage="topk"`` keeps each row's ``top_k`` most similar rows (symmetrised), computed by row
    chunks so that memory stays ``O(n * top_k)``.
    """
    check_choice("storage", storage, ("dense", "topk"))
    x = unit_decoder_rows(vectors)
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
    k = min(int_at_least("top_k", top_k, 1), n - 1)
    sink = TopkCollector(n, k)
    for a in range(0, n, c):
        b = min(n, a + c)
        sink.add(x[a:b] @ x.T, a, lambda v: 1.0 - np.arccos(np.clip(v, -1.0, 1.0)) / np.pi)
    m = sink.matrix()
    return Affinity(kind="geometry", matrix=m, feature_index=np.arange(n),
                    note=f"1 - arccos(cos)/pi, top-{k} graph per feature (symmetrised)")


__all__ = ["Affinity", "AffinitySummary", "affinity", "angular_affinity", "usable_features", "unit_decoder_rows",
           "chunk_topk", "TopkCollector"]
