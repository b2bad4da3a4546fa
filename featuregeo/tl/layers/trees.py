"""StructLens trees and their comparison: arborescences, per-sentence trees, UAS, tree edit distance.

StructLens (arXiv 2603.03328) builds, per sentence and layer, a maximum spanning tree over tokens with
arc score ``1 / (1 + ||x_head - x_dep||)`` and only forward arcs (the head is an earlier token); the
first token attaches to the root (root arcs score 0).  :func:`maximum_spanning_arborescence` is a
general Chu-Liu/Edmonds solver; :func:`structlens_tree` uses it or, by default, the equivalent closed
form (with forward-only arcs every choice of one earlier head per token is acyclic, so the optimum
attaches each token to its nearest earlier token — the tests check the two agree).  Trees are
compared by :func:`uas` (edge agreement; edge edit = n (1 - UAS)) and :func:`tree_edit_distance`
(Zhang-Shasha ordered tree edit distance, unit costs, children in token order, node labels = token
positions).

References
----------
Zhang & Shasha, "Simple fast algorithms for the editing distance between trees", SIAM J. Comput. 1989.
Chu & Liu 1965; Edmonds 1967 (optimum branchings).
"""

from __future__ import annotations

import numpy as np

from featuregeo.core.errors import InputError

__all__ = ["maximum_spanning_arborescence", "structlens_scores", "structlens_tree", "sentence_trees", "uas",
           "tree_edit_distance", "check_tokens", "postorder", "keyroots", "ted_kernel"]


# ----------------------------------------------------------------------------------------------
# arborescences
# ----------------------------------------------------------------------------------------------
def _find_cycle(head: np.ndarray) -> list[int] | None:
    """A cycle of the functional graph ``v -> head[v]`` (root has head -1), or None."""
    n = head.size
    state = np.zeros(n, dtype=np.int8)  # 0 new, 1 on current path, 2 done
    for s in range(n):
        path = []
        v = s
        while v >= 0 and state[v] == 0:
            state[v] = 1
            path.append(v)
            v = int(head[v])
        if v >= 0 and state[v] == 1:
            return path[path.index(v):]
        for u in path:
            state[u] = 2
    return None


def _edmonds(S: np.ndarray) -> np.ndarray:
    n = S.shape[0]
    head = np.argmax(S, axis=0)
    best = S[head, np.arange(n)]
    if n > 1 and not np.all(np.isfinite(best[1:])):
        raise InputError("scores: some node has no incoming arc; expected a graph in which every node is "
                         "reachable from the root (node 0)")
    head[0] = -1
    cycle = _find_cycle(head)
    if cycle is None:
        return head
    in_c = np.zeros(n, dtype=bool)
    in_c[cycle] = True
    rest = np.flatnonzero(~in_c)  # includes the root 0 (never on a cycle)
    cyc = np.asarray(cycle)
    m = rest.size + 1  # contracted node is index m - 1
    T = np.full((m, m), -np.inf)
    T[: m - 1, : m - 1] = S[np.ix_(rest, rest)]
    # arcs into the cycle: gain of replacing the cycle arc into v by u -> v
    into = S[np.ix_(rest, cyc)] - best[cyc][None, :]
    enter = np.argmax(into, axis=1)
    T[: m - 1, m - 1] = into[np.arange(rest.size), enter]
    # arcs out of the cycle: best cycle member as head
    out = S[np.ix_(cyc, rest)]
    leave = np.argmax(out, axis=0)
    T[m - 1, : m - 1] = out[leave, np.arange(rest.size)]
    T[:, 0] = -np.inf
    np.fill_diagonal(T, -np.inf)
    sub = _edmonds(T)
    new = head.copy()
    for k, v in enumerate(rest):
        if k == 0:
            continue
        h = sub[k]
        new[v] = cyc[leave[k]] if h == m - 1 else rest[h]
    u = sub[m - 1]
    v_enter = cyc[enter[u]]
    new[v_enter] = rest[u]
    return new


def maximum_spanning_arborescence(scores: np.ndarray) -> np.ndarray:
    """Maximum spanning arborescence rooted at node 0 (Chu-Liu/Edmonds).

    Parameters
    ----------
    scores : ndarray (n, n)
        ``scores[h, d]`` is the score of the arc ``h -> d``; ``-inf`` marks a missing arc.  Arcs into
        node 0 and self-arcs are ignored.

    Returns
    -------
    heads : ndarray (n,) of int
        ``heads[d]`` is the head of node ``d``; ``heads[0] = -1``.
    """
    S = np.array(scores, dtype=np.float64, copy=True)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1:
        raise InputError(f"scores: expected a square (n, n) matrix with n >= 1. Got shape {S.shape} instead.")
    if np.isnan(S).any() or np.isposinf(S).any():
        raise InputError("scores: expected finite scores or -inf for missing arcs. Got NaN or +inf instead.")
    np.fill_diagonal(S, -np.inf)
    S[:, 0] = -np.inf
    return _edmonds(S)


def check_tokens(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as a finite float64 ``(n_tokens, d)`` array; one-line InputError naming ``name`` otherwise."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"{name}: expected a (n_tokens, d) array with n_tokens >= 1. Got shape {x.shape} instead.")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise InputError(f"{name}: expected finite activations. Got NaN or inf instead.")
    return x


def _distances(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def structlens_scores(x: np.ndarray) -> np.ndarray:
    """StructLens arc scores with a root: ``(n+1, n+1)``, node 0 = root, node ``i+1`` = token ``i``.

    Root arcs score 0; token ``i -> j`` scores ``1 / (1 + ||x_i - x_j||)`` when ``i < j`` (forward
    only) and ``-inf`` otherwise.
    """
    x = check_tokens(x)
    n = x.shape[0]
    S = np.full((n + 1, n + 1), -np.inf)
    S[0, 1:] = 0.0
    fwd = np.triu(np.ones((n, n), dtype=bool), k=1)
    S[1:, 1:] = np.where(fwd, 1.0 / (1.0 + _distances(x)), -np.inf)
    return S


def structlens_tree(x: np.ndarray, *, method: str = "greedy") -> np.ndarray:
    """The StructLens tree of one sentence: ``heads[j]`` = head token of token ``j`` (-1 = root).

    ``method="greedy"`` uses the closed form (nearest earlier token; the first token to the root;
    ties go to the earliest token); ``"edmonds"`` runs :func:`maximum_spanning_arborescence` on
    :func:`structlens_scores`.
    """
    if method == "edmonds":
        return maximum_spanning_arborescence(structlens_scores(x))[1:] - 1
    if method != "greedy":
        raise InputError(f"method: expected 'greedy' or 'edmonds'. Got {method!r} instead.")
    x = check_tokens(x)
    return _greedy_heads(_distances(x))


def _greedy_heads(D: np.ndarray) -> np.ndarray:
    n = D.shape[0]
    D = np.where(np.triu(np.ones((n, n), dtype=bool), k=1), D, np.inf)
    heads = np.argmin(D, axis=0).astype(np.int64)
    heads[0] = -1
    return heads


def sentence_trees(acts: np.ndarray) -> np.ndarray:
    """Trees of every (representation, sentence): ``acts [R, S, T, d]`` -> heads ``[R, S, T]``."""
    acts = np.asarray(acts)
    if acts.ndim != 4:
        raise InputError(f"acts: expected a [n_layers, n_sentences, n_tokens, d] array. Got shape {acts.shape} instead.")
    R, S, T, _ = acts.shape
    heads = np.empty((R, S, T), dtype=np.int64)
    for r in range(R):
        for s in range(S):
            heads[r, s] = _greedy_heads(_distances(acts[r, s].astype(np.float64)))
    return heads


# ----------------------------------------------------------------------------------------------
# tree comparison
# ----------------------------------------------------------------------------------------------
def _check_heads(h, name: str) -> np.ndarray:
    h = np.asarray(h)
    if h.ndim != 1 or not np.issubdtype(h.dtype, np.integer):
        raise InputError(f"{name}: expected a 1-D integer array of head indices (-1 = root). Got {h.dtype} "
                         f"shape {h.shape} instead.")
    n = h.size
    if n and ((h < -1) | (h >= n)).any():
        raise InputError(f"{name}: head indices must lie in -1..{n - 1}. Got {h.min()}..{h.max()} instead.")
    if _find_cycle(h.astype(np.int64)) is not None:
        raise InputError(f"{name}: the heads contain a cycle; expected a tree (every node reaches -1)")
    return h.astype(np.int64)


def uas(heads_a, heads_b, *, skip: int = 0) -> float:
    """Unlabelled attachment score: fraction of tokens (from index ``skip``) with the same head."""
    a, b = _check_heads(heads_a, "heads_a"), _check_heads(heads_b, "heads_b")
    if a.size != b.size:
        raise InputError(f"heads_b: expected {a.size} tokens like heads_a. Got {b.size} instead.")
    if a.size <= skip:
        return float("nan")
    return float(np.mean(a[skip:] == b[skip:]))


def postorder(heads: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(leftmost-leaf index, label) per node in postorder, 1-based arrays, with a virtual root (label -1)."""
    n = heads.size
    children: list[list[int]] = [[] for _ in range(n + 1)]
    for v in range(n):  # increasing v: children in token order
        children[n if heads[v] < 0 else int(heads[v])].append(v)
    lml = np.zeros(n + 2, dtype=np.int64)
    lab = np.zeros(n + 2, dtype=np.int64)
    post = {}
    k = 0
    stack = [(n, 0)]
    while stack:
        v, i = stack.pop()
        if i < len(children[v]):
            stack.append((v, i + 1))
            stack.append((children[v][i], 0))
        else:
            k += 1
            post[v] = k
            lab[k] = -1 if v == n else labels[v]
            # leftmost leaf: that of the first child, or the node itself
            lml[k] = lml[post[children[v][0]]] if children[v] else k
    return lml, lab


def keyroots(lml: np.ndarray, n: int) -> np.ndarray:
    """Zhang-Shasha key roots (1-based postorder indices, ascending) from :func:`postorder`'s leftmost leaves."""
    last = {}
    for i in range(1, n + 1):
        last[int(lml[i])] = i
    return np.array(sorted(last.values()), dtype=np.int64)


def _zs_kernel(l1, lab1, k1, l2, lab2, k2):  # pragma: no cover - compiled by numba when available
    n1 = l1.shape[0] - 1  # nodes, 1-based (index 0 unused)
    n2 = l2.shape[0] - 1
    td = np.zeros((n1 + 1, n2 + 1), dtype=np.int64)
    fd = np.zeros((n1 + 2, n2 + 2), dtype=np.int64)
    for ii in range(k1.shape[0]):
        i = k1[ii]
        for jj in range(k2.shape[0]):
            j = k2[jj]
            li = l1[i]
            lj = l2[j]
            m = i - li + 2
            n = j - lj + 2
            fd[0, 0] = 0
            for x in range(1, m):
                fd[x, 0] = fd[x - 1, 0] + 1
            for y in range(1, n):
                fd[0, y] = fd[0, y - 1] + 1
            for x in range(1, m):
                xo = x + li - 1
                for y in range(1, n):
                    yo = y + lj - 1
                    a = fd[x - 1, y] + 1
                    b = fd[x, y - 1] + 1
                    if l1[xo] == li and l2[yo] == lj:
                        c = fd[x - 1, y - 1] + (0 if lab1[xo] == lab2[yo] else 1)
                        v = min(a, b, c)
                        fd[x, y] = v
                        td[xo, yo] = v
                    else:
                        p = l1[xo] - li
                        q = l2[yo] - lj
                        c = fd[p, q] + td[xo, yo]
                        fd[x, y] = min(a, b, c)
    return td[n1, n2]


_ZS_COMPILED: list = []


def ted_kernel(use_numba: bool = True):
    """The Zhang-Shasha dynamic programme ``f(l1, lab1, k1, l2, lab2, k2) -> distance`` on the arrays of
    :func:`postorder` and :func:`keyroots`; numba-compiled (once per process) unless ``use_numba=False``."""
    if not use_numba:
        return _zs_kernel
    if not _ZS_COMPILED:
        try:
            import numba

            _ZS_COMPILED.append(numba.njit(cache=False, nogil=True)(_zs_kernel))
        except ImportError:  # pragma: no cover - numba comes with umap-learn
            _ZS_COMPILED.append(_zs_kernel)
    return _ZS_COMPILED[0]


def tree_edit_distance(heads_a, heads_b, labels_a=None, labels_b=None, *, use_numba: bool = True) -> int:
    """Ordered tree edit distance (Zhang-Shasha; unit insert, delete and relabel costs).

    Trees are given as head arrays (``-1`` = attached to a virtual root shared by both trees);
    children are ordered by index.  Node labels default to the node index (token position), so two
    trees over the same tokens differ only by structure.

    Parameters
    ----------
    heads_a, heads_b : 1-D int arrays
    labels_a, labels_b : sequences of hashable labels, optional
    use_numba : bool, default=True
        JIT-compile the dynamic programme (same result; pure Python otherwise).
    """
    a, b = _check_heads(heads_a, "heads_a"), _check_heads(heads_b, "heads_b")
    if labels_a is None and labels_b is None:
        la, lb = np.arange(a.size), np.arange(b.size)
    else:
        if labels_a is None or labels_b is None or len(labels_a) != a.size or len(labels_b) != b.size:
            raise InputError("labels_a, labels_b: expected both or neither, one label per node")
        codes: dict = {}
        la = np.array([codes.setdefault(x, len(codes)) for x in labels_a], dtype=np.int64)
        lb = np.array([codes.setdefault(x, len(codes)) for x in labels_b], dtype=np.int64)
    l1, lab1 = postorder(a, la)
    l2, lab2 = postorder(b, lb)
    k1, k2 = keyroots(l1, a.size + 1), keyroots(l2, b.size + 1)
    return int(ted_kernel(use_numba)(l1, lab1, k1, l2, lab2, k2))


