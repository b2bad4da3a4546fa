"""Cross-layer structure: representation similarity, StructLens trees, SAE geometry across layers,
and a pruning check of which similarity measure finds redundant blocks.

* Representations: ``rep 0`` is the input of block 0 (the scaled token embeddings), ``rep L+1`` the
  output of block ``L`` (the residual stream), on held-out blocks of text (BOS dropped).
* :func:`cosine_matrix` — mean cosine between the same token's vectors at two layers (baseline).
* :func:`linear_cka` / :func:`cka_matrix` — linear CKA (Kornblith et al. 2019) over tokens.
* StructLens (arXiv 2603.03328): per sentence and layer a maximum spanning tree over tokens with arc
  score ``1 / (1 + ||x_head - x_dep||)`` and only forward arcs (the head is an earlier token); the
  first token attaches to the root (root arcs score 0).  :func:`maximum_spanning_arborescence` is a
  general Chu-Liu/Edmonds solver; :func:`structlens_tree` uses it or, by default, the equivalent
  closed form (with forward-only arcs every choice of one earlier head per token is acyclic, so the
  optimum attaches each token to its nearest earlier token — the tests check the two agree).
  Layers are compared per sentence by :func:`uas` (edge agreement; edge edit = n (1 - UAS)) and
  :func:`tree_edit_distance` (Zhang-Shasha ordered tree edit distance, unit costs, children in token
  order, node labels = token positions); both are averaged over sentences.
* :func:`match_features` — best cosine match per decoder row between adjacent SAE layers and a
  one-to-one assignment (``scipy.optimize.linear_sum_assignment``), with a random-rotation null.
* :func:`skip_blocks` / :func:`heldout_loss` — next-token loss of a model with some decoder blocks
  skipped (forward hooks return the block's input; the model is restored even on error).
* :func:`run_layers` — everything, resumable, -> :class:`LayerResult` (``layers.json``).

Similarity matrices are indexed by representation (``labels``: ``"embed", "0", ..., "17"``).  Block
``L`` is redundant under a measure when ``sim(rep L, rep L+1)`` — its input and its output — is high.
For trees the similarity used is the mean UAS (``"uas"``) and ``1 - mean(TED) / (2 n_tokens)`` (``"ted"``).

References
----------
Kornblith, Norouzi, Lee & Hinton, "Similarity of neural network representations revisited", ICML 2019.
Zhang & Shasha, "Simple fast algorithms for the editing distance between trees", SIAM J. Comput. 1989.
Chu & Liu 1965; Edmonds 1967 (optimum branchings).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from featuregeo.core.util import atomic_write_bytes, atomic_write_json, resolve_rng
from featuregeo.core.errors import InputError
from featuregeo.core.results import LegacyResult as Result, register

MEASURES = ("cosine", "cka", "uas", "ted")
DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


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


def _check_tokens(x: np.ndarray, name: str = "x") -> np.ndarray:
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
    x = _check_tokens(x)
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
    x = _check_tokens(x)
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


def _postorder(heads: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _keyroots(lml: np.ndarray, n: int) -> np.ndarray:
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


def _zs(use_numba: bool = True):
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
    l1, lab1 = _postorder(a, la)
    l2, lab2 = _postorder(b, lb)
    k1, k2 = _keyroots(l1, a.size + 1), _keyroots(l2, b.size + 1)
    return int(_zs(use_numba)(l1, lab1, k1, l2, lab2, k2))


# ----------------------------------------------------------------------------------------------
# representation similarity
# ----------------------------------------------------------------------------------------------
def _check_reps(acts) -> np.ndarray:
    acts = np.asarray(acts)
    if acts.ndim != 4:
        raise InputError(f"acts: expected a [n_layers, n_sentences, n_tokens, d] array. Got shape {acts.shape} instead.")
    R, S, T, d = acts.shape
    if R < 2 or S < 1 or T < 3 or d < 1:
        raise InputError(f"acts: expected at least 2 layers, 1 sentence and 3 tokens per sentence. Got shape "
                         f"{acts.shape} instead.")
    if not np.isfinite(acts).all():
        raise InputError("acts: expected finite activations. Got NaN or inf instead.")
    return acts


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two representations of the same ``n`` examples, ``x (n, d1)``, ``y (n, d2)``.

    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``.  Invariant to
    orthogonal transforms and isotropic scaling; biased upward for small ``n`` (about ``d / n`` for
    independent Gaussians).
    """
    x = _check_tokens(x, "x")
    y = _check_tokens(y, "y")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"y: expected {x.shape[0]} rows like x. Got {y.shape[0]} instead.")
    return float(cka_matrix([x, y])[0, 1])


def cka_matrix(reps: Sequence[np.ndarray]) -> np.ndarray:
    """Linear CKA between every pair of representations (each ``(n, d)``, same ``n``)."""
    xs = []
    for x in reps:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        nrm = np.linalg.norm(x)
        xs.append((x / nrm if nrm > 0 else x).astype(np.float32))
    R = len(xs)
    n = xs[0].shape[0]
    d = max(x.shape[1] for x in xs)
    out = np.eye(R)
    if n <= (R + 1) / 2 * d:  # token-space Gram matrices: R products of n x n, then one Gram of Grams
        K = np.stack([x @ x.T for x in xs]).reshape(R, -1)
        G = np.zeros((R, R))
        step = max(1, (64 * 2**20) // (8 * R))
        for c in range(0, K.shape[1], step):  # float64 accumulation in column chunks (bounded memory)
            kc = K[:, c:c + step].astype(np.float64)
            G += kc @ kc.T
        del K
        norms = np.sqrt(np.diag(G))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = G / np.outer(norms, norms)
        np.fill_diagonal(out, 1.0)
    else:  # feature space: R^2 / 2 products of d x d
        norms = [float(np.linalg.norm((x.T @ x).astype(np.float64))) for x in xs]
        for a in range(R):
            for b in range(a + 1, R):
                v = float(np.sum((xs[a].T @ xs[b]).astype(np.float64) ** 2))
                out[a, b] = out[b, a] = v / (norms[a] * norms[b]) if norms[a] * norms[b] > 0 else np.nan
    return out


def cosine_matrix(acts) -> np.ndarray:
    """Mean over tokens of the cosine between the same token's vectors at two layers."""
    acts = np.asarray(acts, dtype=np.float32)
    R = acts.shape[0]
    u = acts.reshape(R, -1, acts.shape[-1]).astype(np.float64)
    u /= np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    n = u.shape[1]
    flat = u.reshape(R, -1)
    return (flat @ flat.T) / n


def tree_matrices(heads: np.ndarray, *, uas_skip: int = 2, ted: bool = True,
                  progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Mean UAS and mean normalised tree edit distance between every pair of layers.

    ``heads [R, S, T]``.  UAS counts tokens from ``uas_skip`` on (the first two tokens have no choice
    of head).  ``ted_distance`` is ``mean(TED) / (2 T)`` (deleting and reinserting every token costs
    ``2 T``, so it lies in [0, 1]); ``ted`` (the similarity) is ``1 - ted_distance``.
    """
    R, S, T = heads.shape
    U = np.eye(R)
    for a in range(R):
        for b in range(a + 1, R):
            U[a, b] = U[b, a] = float(np.mean(heads[a, :, uas_skip:] == heads[b, :, uas_skip:]))
    out = {"uas": U}
    if ted:
        D = np.zeros((R, R))
        prep = [[None] * S for _ in range(R)]
        lab = np.arange(T)
        for r in range(R):
            for s in range(S):
                l1, lab1 = _postorder(heads[r, s], lab)
                prep[r][s] = (l1, lab1, _keyroots(l1, T + 1))
        kern = _zs(True)
        for a in range(R):
            for b in range(a + 1, R):
                tot = 0
                for s in range(S):
                    if np.array_equal(heads[a, s], heads[b, s]):
                        continue
                    tot += kern(*prep[a][s], *prep[b][s])
                D[a, b] = D[b, a] = tot / (2 * S * T)
            if progress:
                progress(f"layers: tree edit distances, row {a + 1}/{R}")
        out["ted_distance"] = D
        out["ted"] = 1.0 - D
    return out


def similarity_matrices(acts, measures: Sequence[str] = MEASURES, *, progress=None) -> dict[str, np.ndarray]:
    """Every requested measure (``cosine``, ``cka``, ``uas``, ``ted``) for ``acts [R, S, T, d]``."""
    measures = check_measures(measures)
    acts = _check_reps(acts)
    out: dict[str, np.ndarray] = {}
    if "cosine" in measures:
        out["cosine"] = cosine_matrix(acts)
    if "cka" in measures:
        R, S, T, d = acts.shape
        out["cka"] = cka_matrix([acts[r].reshape(S * T, d) for r in range(R)])
    if "uas" in measures or "ted" in measures:
        t = tree_matrices(sentence_trees(acts), ted="ted" in measures, progress=progress)
        out.update({k: v for k, v in t.items() if k in measures or k == "ted_distance"})
    return out


def check_measures(measures) -> list[str]:
    if isinstance(measures, str):
        measures = [m.strip() for m in measures.split(",") if m.strip()]
    measures = list(measures)
    bad = [m for m in measures if m not in MEASURES]
    if bad or not measures:
        raise InputError(f"measures: expected some of {list(MEASURES)}. Got {measures!r} instead.")
    return list(dict.fromkeys(measures))


def redundancy(sim: np.ndarray) -> list[dict]:
    """Blocks ranked most redundant first: block ``L`` scores ``sim[L, L+1]`` (its input vs output)."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise InputError(f"sim: expected a square matrix over >= 2 representations. Got shape {sim.shape} instead.")
    scores = np.array([sim[L, L + 1] for L in range(sim.shape[0] - 1)])
    order = sorted(range(scores.size), key=lambda L: (-scores[L], L))
    return [{"block": int(L), "score": float(scores[L])} for L in order]


# ----------------------------------------------------------------------------------------------
# SAE feature matching
# ----------------------------------------------------------------------------------------------
def _unit(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"{name}: expected a (n_features, d_model) decoder matrix. Got shape {x.shape} instead.")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-30)


def random_rotation(d: int, seed=0) -> np.ndarray:
    """A Haar-random orthogonal ``(d, d)`` matrix (QR of a Gaussian with sign correction)."""
    rng = resolve_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


def match_features(a: np.ndarray, b: np.ndarray, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   assignment: bool = True, bins: int = 40) -> dict:
    """Match the decoder rows of layer ``a`` to those of layer ``b`` by cosine.

    Returns a dict with ``best_ab`` / ``best_ba`` (best cosine of each row of ``a`` in ``b`` and vice
    versa; summarised by quantiles and a histogram), ``frac_persist`` (rows of ``a`` whose best match
    in ``b`` exceeds each threshold), ``frac_appear`` (rows of ``b`` with no match in ``a`` above it),
    ``frac_vanish`` (= 1 - frac_persist), and with ``assignment`` the one-to-one assignment
    (``linear_sum_assignment`` maximising total cosine): ``assigned_mean`` and ``frac_assigned``.
    """
    ua, ub = _unit(a, "a"), _unit(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise InputError(f"b: expected d_model {ua.shape[1]} like a. Got {ub.shape[1]} instead.")
    C = ua @ ub.T
    best_ab = C.max(1)
    best_ba = C.max(0)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    out: dict[str, Any] = {
        "n_a": int(ua.shape[0]), "n_b": int(ub.shape[0]), "thresholds": [float(t) for t in thresholds],
        "best_mean": float(best_ab.mean()), "best_quantiles": np.quantile(best_ab, q).tolist(),
        "best_ba_mean": float(best_ba.mean()),
        "frac_persist": [float((best_ab > t).mean()) for t in thresholds],
        "frac_vanish": [float((best_ab <= t).mean()) for t in thresholds],
        "frac_appear": [float((best_ba <= t).mean()) for t in thresholds],
        "best_hist": np.histogram(best_ab, edges)[0].tolist(), "hist_edges": edges.tolist(),
    }
    if assignment:
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(C, maximize=True)
        v = C[r, c]
        out.update(assigned_mean=float(v.mean()), assigned_quantiles=np.quantile(v, q).tolist(),
                   frac_assigned=[float((v > t).mean()) for t in thresholds],
                   assigned_hist=np.histogram(v, edges)[0].tolist(),
                   assignment=c[np.argsort(r)].tolist() if ua.shape[0] <= ub.shape[0] else None)
    return out


def sae_geometry(suite, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, null: bool = True,
                 null_assignment: bool = True, galaxy: str | Path | None = None, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Galaxy slope per layer and feature matching between adjacent available layers of a suite.

    ``galaxy`` may name a ``galaxy.json`` (or its folder) whose slopes are used instead of refitting.
    The null rotates layer ``b`` by a seeded Haar-random orthogonal matrix (its own geometry kept,
    alignment with ``a`` destroyed; one rotation for all pairs) and matches again.
    """
    from featuregeo.tl.galaxy import GalaxyParams, analyze_layer

    layers = list(suite.layers)
    if len(layers) < 2:
        raise InputError(f"sae: expected a suite with at least 2 layers. Got layers {layers} instead.")
    slopes = {}
    if galaxy is not None:
        gp = Path(galaxy)
        gp = gp / "galaxy.json" if gp.is_dir() else gp
        if not gp.is_file():
            raise InputError(f"galaxy: {gp} does not exist; expected a galaxy.json written by `featuregeo galaxy`")
        recs = json.loads(gp.read_text())
        recs = recs.get("layers", recs) if isinstance(recs, dict) else recs
        slopes = {int(r["layer"]): {"slope": r.get("slope"), "slope_ci": r.get("slope_ci"), "from": str(gp)}
                  for r in recs if r.get("layer") is not None}
    per_layer = []
    pairs = []
    prev = None
    rot = None
    for L in layers:
        cloud = suite.load(L)
        v = cloud.vectors
        if L in slopes:
            rec = {"layer": L, **slopes[L]}
        else:
            g = analyze_layer(cloud, GalaxyParams(entropy=False, null=False, seed=seed))
            rec = {"layer": L, "slope": g.slope, "slope_ci": g.slope_ci, "from": "analyze_layer"}
        rec["n_features"] = int(v.shape[0])
        per_layer.append(rec)
        if prev is not None:
            La, va = prev
            m = match_features(va, v, thresholds=thresholds)
            m.pop("assignment", None)
            m.update(layer_a=La, layer_b=L)
            if null:
                if rot is None:  # one seeded rotation serves every pair
                    rot = random_rotation(v.shape[1], np.random.default_rng([seed, 11]))
                nm = match_features(va, v @ rot, thresholds=thresholds, assignment=null_assignment)
                nm.pop("assignment", None)
                m["null"] = nm
            pairs.append(m)
            if progress:
                progress(f"layers: SAE matching {La}->{L}: persist@{thresholds[-2]} {m['frac_persist'][-2]:.3f}"
                         + (f" (null {m['null']['frac_persist'][-2]:.3f})" if null else ""))
        prev = (L, v)
    return {"source": getattr(suite, "name", ""), "layers": per_layer, "pairs": pairs,
            "thresholds": [float(t) for t in thresholds]}


# ----------------------------------------------------------------------------------------------
# model: representations, pruning, loss
# ----------------------------------------------------------------------------------------------
def read_representations(loaded, rows: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """Residual representations ``[n_layers + 1, n_rows, T, d]`` (float32) of token rows that start with BOS.

    ``rep 0`` is the input of block 0; ``rep L+1`` the output of block ``L``.  The BOS position is dropped.
    """
    import torch

    from featuregeo.io.models import base_model, decoder_layers

    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, 1 + T]. Got shape {rows.shape} instead.")
    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    n = len(blocks)
    out = np.empty((n + 1, rows.shape[0], rows.shape[1] - 1, loaded.d_model), dtype=np.float32)
    cur: dict = {}

    def pre(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        cur[0] = h.detach()

    def make(L):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            cur[L + 1] = h.detach()
        return hook

    handles = [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [blocks[L].register_forward_hook(make(L)) for L in range(n)]
    try:
        with torch.inference_mode():
            for i in range(0, rows.shape[0], batch_size):
                ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
                cur.clear()
                base(input_ids=ids, use_cache=False)
                for r in range(n + 1):
                    out[r, i:i + ids.shape[0]] = cur[r][:, 1:].float().cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return out


@contextlib.contextmanager
def skip_blocks(loaded, drop: Iterable[int]):
    """Context manager: decoder blocks ``drop`` pass their input through unchanged.

    Forward hooks replace each dropped block's output by its input, so every other block keeps its
    own attention type, sliding window and rotary embedding.  The hooks are removed on exit, also on
    error, leaving the model exactly as it was.
    """
    from featuregeo.io.models import decoder_layers

    blocks = decoder_layers(loaded.model)
    drop = sorted({int(x) for x in drop})
    bad = [L for L in drop if not 0 <= L < len(blocks)]
    if bad:
        raise InputError(f"drop: blocks {bad} are out of range; expected blocks in 0..{len(blocks) - 1}")

    def hook(module, args, kwargs, output):
        h = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            return (h,) + tuple(output[1:])
        return h

    handles = [blocks[L].register_forward_hook(hook, with_kwargs=True) for L in drop]
    try:
        yield drop
    finally:
        for h in handles:
            h.remove()


def heldout_loss(loaded, rows: np.ndarray, *, drop: Iterable[int] = (), batch_size: int = 4,
                 chunk: int = 128) -> dict:
    """Mean next-token cross-entropy (nats/token) of ``rows`` with blocks ``drop`` skipped.

    Every position predicts the next token (the first prediction reads only BOS).  The LM head is
    applied to ``chunk`` positions at a time, so memory stays ~``chunk x vocab`` floats.
    """
    import torch
    import torch.nn.functional as F

    from featuregeo.io.models import base_model

    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, >= 2 tokens]. Got shape {rows.shape} instead.")
    model = loaded.model
    base = base_model(model)
    head = model.get_output_embeddings()
    cfg = getattr(model.config, "text_config", None) or model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    total = 0.0
    count = 0
    t0 = time.perf_counter()
    with skip_blocks(loaded, drop), torch.inference_mode():
        for i in range(0, rows.shape[0], batch_size):
            ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
            h = base(input_ids=ids, use_cache=False).last_hidden_state[:, :-1].reshape(-1, loaded.d_model)
            tgt = ids[:, 1:].reshape(-1)
            for j in range(0, h.shape[0], chunk):
                logits = head(h[j:j + chunk]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                total += float(F.cross_entropy(logits, tgt[j:j + chunk], reduction="sum").double())
                count += int(tgt[j:j + chunk].numel())
    return {"loss": total / count, "n_tokens": count, "dropped": sorted({int(x) for x in drop}),
            "seconds": time.perf_counter() - t0}


def heldout_rows(tokenizer, *, n_sim: int, sim_len: int, n_loss: int, loss_len: int, seed: int = 0,
                 held_out: float = 0.1, corpus=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Token rows (BOS first) from the held-out split of ``corpus`` (default: the built-in corpus),
    genres interleaved.

    Similarity rows and loss rows come from different documents (one block per document).
    """
    from featuregeo.io.corpus import blocks, builtin_corpus

    for name, v in (("n_blocks", n_sim), ("block_len", sim_len), ("loss_blocks", n_loss),
                    ("loss_block_len", loss_len)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}: expected a positive integer. Got {v!r} instead.")
    if n_sim < 2:
        raise InputError(f"n_blocks: expected at least 2 blocks to compare layers. Got {n_sim} instead.")
    if sim_len < 4:
        raise InputError(f"block_len: expected at least 4 tokens per block. Got {sim_len} instead.")
    _, held = (builtin_corpus(warn=False) if corpus is None else corpus).split(held_out, seed=seed)
    genres = held.genres
    docs = {g: list(held.by_genre(g)) for g in genres}
    used: set[str] = set()

    def take(n, length):
        per = [list(blocks([d for d in docs[g] if d.doc_id not in used], tokenizer, length, add_bos=True,
                           max_blocks=-(-n // len(genres)), max_blocks_per_doc=1)) for g in genres]
        out = []
        for k in range(max(len(p) for p in per)):
            out += [p[k] for p in per if k < len(p)]
        out = out[:n]
        used.update(b.doc_id for b in out)
        return out

    sim = take(n_sim, sim_len)
    loss = take(n_loss, loss_len)
    if len(sim) < n_sim or len(loss) < n_loss:
        raise InputError(f"n_blocks: the held-out split has too few documents for {n_sim} + {n_loss} blocks")
    info = {"genres": [b.genre for b in sim], "loss_genres": [b.genre for b in loss],
            "doc_ids": [b.doc_id for b in sim], "loss_doc_ids": [b.doc_id for b in loss]}
    return np.stack([b.input_ids for b in sim]), np.stack([b.input_ids for b in loss]), info


# ----------------------------------------------------------------------------------------------
# result and driver
# ----------------------------------------------------------------------------------------------
@register
@dataclass
class LayerResult(Result):
    """Cross-layer comparison of one model (``layers.json``).

    ``matrices``: measure -> similarity matrix over ``labels`` (``ted_distance`` too);
    ``redundancy``: measure -> blocks ranked most redundant first with their scores;
    ``sae``: galaxy slope per SAE layer and the matching table between adjacent layers (with null);
    ``pruning``: the baseline loss and one row per (method, n dropped), random drops summarised.
    """

    kind = "layers"
    model: str = ""
    labels: list = field(default_factory=list)
    matrices: dict = field(default_factory=dict)
    redundancy: dict = field(default_factory=dict)
    sae: dict | None = None
    pruning: dict | None = None
    data: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def matrix(self, measure: str) -> np.ndarray:
        if measure not in self.matrices:
            raise InputError(f"measure: expected one of {sorted(self.matrices)}. Got {measure!r} instead.")
        return np.asarray(self.matrices[measure], dtype=np.float64)


def _stamp(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_json(path: Path, stamp: str):
    if path.is_file():
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        if d.get("stamp") == stamp:
            return d["value"]
    return None


def pruning_check(loaded, rows: np.ndarray, rankings: dict[str, list[int]], *, prune_max: int = 3,
                  random_drops: int = 5, seed: int = 0, cache_dir: str | Path | None = None,
                  batch_size: int = 4, progress: Callable[[str], None] | None = None) -> dict:
    """Loss after dropping the ``n`` most redundant blocks of each ranking, ``n = 1..prune_max``,
    against ``random_drops`` seeded random orders (mean and std per ``n``).  Each distinct set of
    dropped blocks is evaluated once and cached in ``cache_dir`` (resumable)."""
    n_blocks = len(_decoder_layers_of(loaded))
    if not isinstance(prune_max, int) or not 1 <= prune_max < n_blocks:
        raise InputError(f"prune_max: expected an integer in 1..{n_blocks - 1}. Got {prune_max!r} instead.")
    if not isinstance(random_drops, int) or random_drops < 0:
        raise InputError(f"random_drops: expected a non-negative integer. Got {random_drops!r} instead.")
    rows_key = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]
    base_stamp = {"model": loaded.name, "source": loaded.source, "rows": rows_key}
    cache: dict[tuple, dict] = {}

    def evaluate(drop) -> dict:
        key = tuple(sorted(int(x) for x in drop))
        if key in cache:
            return cache[key]
        stamp = _stamp({**base_stamp, "drop": list(key)})
        path = None if cache_dir is None else Path(cache_dir) / f"loss_{stamp}.json"
        val = _load_json(path, stamp) if path is not None else None
        if val is None:
            val = heldout_loss(loaded, rows, drop=key, batch_size=batch_size)
            if path is not None:
                atomic_write_json(path, {"stamp": stamp, "value": val})
            if progress:
                progress(f"layers: loss with blocks {list(key)} dropped: {val['loss']:.4f} ({val['seconds']:.1f}s)")
        cache[key] = val
        return val

    base = evaluate(())
    table = []
    for method, order in rankings.items():
        for n in range(1, prune_max + 1):
            drop = sorted(order[:n])
            v = evaluate(drop)
            table.append({"method": method, "n_drop": n, "dropped": drop, "loss": v["loss"],
                          "delta": v["loss"] - base["loss"]})
    rnd = []
    for s in range(random_drops):
        perm = np.random.default_rng([seed, 7, s]).permutation(n_blocks).tolist()
        for n in range(1, prune_max + 1):
            drop = sorted(perm[:n])
            v = evaluate(drop)
            rnd.append({"method": "random", "seed": s, "n_drop": n, "dropped": drop, "loss": v["loss"],
                        "delta": v["loss"] - base["loss"]})
    summary = []
    for n in range(1, prune_max + 1):
        ls = np.array([r["loss"] for r in rnd if r["n_drop"] == n])
        summary.append({"n_drop": n, "mean": float(ls.mean()) if ls.size else None,
                        "std": float(ls.std(ddof=1)) if ls.size > 1 else None, "n": int(ls.size)})
    return {"baseline": base["loss"], "n_tokens": base["n_tokens"], "table": table, "random": rnd,
            "random_summary": summary, "prune_max": prune_max, "n_blocks": n_blocks}


def _decoder_layers_of(loaded):
    from featuregeo.io.models import decoder_layers

    return decoder_layers(loaded.model)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    atomic_write_bytes(path, b.getvalue())


def run_layers(loaded, out: str | Path, *, sae=None, measures: Sequence[str] = MEASURES, n_blocks: int = 32,
               block_len: int = 64, loss_blocks: int = 32, loss_block_len: int = 128, prune_max: int = 3,
               random_drops: int = 5, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
               null_assignment: bool = True, galaxy: str | Path | None = None, seed: int = 0,
               corpus=None, batch_size: int = 8, progress: Callable[[str], None] | None = None) -> LayerResult:
    """The whole layer comparison of a loaded model; resumable through ``out/.layers_cache``.

    Parameters
    ----------
    loaded : LoadedModel
    out : path
        Folder for ``layers.json`` and the cache (activations, matrices, each pruning evaluation).
    sae : Suite, optional
        SAE suite for the galaxy slopes and feature matching (None skips that part).
    measures : sequence of str, default=("cosine", "cka", "uas", "ted")
    n_blocks, block_len : int
        Held-out blocks (sentences) for the similarity measures.
    loss_blocks, loss_block_len : int
        Other held-out blocks (other documents) for the pruning loss.
    corpus : Corpus, optional
        Its held-out split (10% of documents, by hash) supplies the text; default the built-in corpus.
    prune_max, random_drops : int
    seed : int
    """
    t0 = time.perf_counter()
    log = progress or (lambda m: None)
    measures = check_measures(measures)
    out = Path(out)
    cache = out / ".layers_cache"
    cache.mkdir(parents=True, exist_ok=True)
    n_model_blocks = len(_decoder_layers_of(loaded))
    if not isinstance(prune_max, int) or not 0 <= prune_max < n_model_blocks:
        raise InputError(f"prune_max: expected an integer in 0..{n_model_blocks - 1}. Got {prune_max!r} instead.")
    sim_rows, loss_rows, info = heldout_rows(loaded.tokenizer, n_sim=n_blocks, sim_len=block_len,
                                             n_loss=loss_blocks, loss_len=loss_block_len, seed=seed,
                                             corpus=corpus)
    key = {"model": loaded.name, "source": loaded.source,
           "rows": hashlib.sha256(sim_rows.astype(np.int64).tobytes()).hexdigest()[:16]}
    stamp = _stamp(key)
    apath = cache / f"acts_{stamp}.npy"
    if apath.is_file():
        acts = np.load(apath, allow_pickle=False)
        log(f"layers: reused activations {apath}")
    else:
        acts = read_representations(loaded, sim_rows, batch_size=batch_size)
        _save_npy(apath, acts)
        log(f"layers: activations {acts.shape} -> {apath}")
    mats: dict[str, Any] = {}
    for m in measures:
        mstamp = _stamp({**key, "measure": m})
        got = _load_json(cache / f"matrix_{m}.json", mstamp)
        if got is None:
            t1 = time.perf_counter()
            res = similarity_matrices(acts, [m], progress=log)
            got = {k: v.tolist() for k, v in res.items()}
            atomic_write_json(cache / f"matrix_{m}.json", {"stamp": mstamp, "value": got})
            log(f"layers: {m} matrix in {time.perf_counter() - t1:.1f}s")
        mats.update(got)
    del acts
    red = {m: redundancy(np.asarray(mats[m])) for m in measures}
    sae_part = None
    if sae is not None:
        sstamp = _stamp({"sae": getattr(sae, "name", ""), "layers": list(sae.layers), "thresholds": list(thresholds),
                         "null_assignment": null_assignment, "galaxy": str(galaxy), "seed": seed})
        sae_part = _load_json(cache / "sae.json", sstamp)
        if sae_part is None:
            sae_part = sae_geometry(sae, thresholds=thresholds, null_assignment=null_assignment, galaxy=galaxy,
                                    seed=seed, progress=log)
            atomic_write_json(cache / "sae.json", {"stamp": sstamp, "value": sae_part})
        else:
            log(f"layers: reused SAE matching {cache / 'sae.json'}")
    pruning = None
    if prune_max > 0:
        pruning = pruning_check(loaded, loss_rows, {m: [r["block"] for r in red[m]] for m in measures},
                                prune_max=prune_max, random_drops=random_drops, seed=seed, cache_dir=cache,
                                progress=log)
    labels = ["embed"] + [str(L) for L in range(n_model_blocks)]
    params = {"measures": measures, "n_blocks": n_blocks, "block_len": block_len, "loss_blocks": loss_blocks,
              "loss_block_len": loss_block_len, "prune_max": prune_max, "random_drops": random_drops,
              "thresholds": list(thresholds), "null_assignment": null_assignment, "seed": seed,
              "uas_skip": 2, "corpus": f"{'builtin' if corpus is None else corpus.name}:heldout(0.1)"}
    res = LayerResult(model=loaded.name, labels=labels, matrices=mats, redundancy=red, sae=sae_part,
                      pruning=pruning, data={"n_tokens_similarity": int(sim_rows.shape[0] * (sim_rows.shape[1] - 1)),
                                             **info}, params=params, seconds=time.perf_counter() - t0)
    res.save(out / "layers.json")
    return res
