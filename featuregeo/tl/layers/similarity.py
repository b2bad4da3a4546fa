"""Representation similarity across layers: mean token cosine, linear CKA, StructLens tree matrices,
and the redundancy ranking of blocks.

Similarity matrices are indexed by representation: ``rep 0`` is the input of block 0 (the scaled
token embeddings), ``rep L+1`` the output of block ``L``.  Block ``L`` is redundant under a measure
when ``sim(rep L, rep L+1)`` — its input and its output — is high.  For trees the similarity is the
mean UAS (``"uas"``) and ``1 - mean(TED) / (2 n_tokens)`` (``"ted"``).

References
----------
Kornblith, Norouzi, Lee & Hinton, "Similarity of neural network representations revisited", ICML 2019.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.tl.layers.trees import check_tokens, keyroots, postorder, sentence_trees, ted_kernel

MEASURES = ("cosine", "cka", "uas", "ted")
UAS_SKIP = 2  # the first two tokens have no choice of head

__all__ = ["MEASURES", "UAS_SKIP", "RedundantBlock", "check_measures", "check_reps", "linear_cka", "cka_matrix",
           "debiased_cka_matrix", "gaussian_cka_baseline",
           "cosine_matrix", "tree_matrices", "similarity_matrices", "redundancy"]


@dataclass
class RedundantBlock(Result):
    """One block of a redundancy ranking.

    Attributes
    ----------
    block : int
        Decoder block ``L``.
    score : float
        ``sim(rep L, rep L+1)``: the similarity of the block's input and output under one measure.
    """

    kind = "redundant_block"
    block: int = 0
    score: float = float("nan")


def check_measures(measures) -> list[str]:
    """The measures as a de-duplicated list (a comma string is split); InputError for unknown names.

    Examples
    --------
    >>> check_measures("cka,cosine,cka")
    ['cka', 'cosine']
    """
    if isinstance(measures, str):
        measures = [m.strip() for m in measures.split(",") if m.strip()]
    try:
        measures = list(measures)
    except TypeError:
        raise InputError(f"measures: expected some of {list(MEASURES)}. Got {measures!r} instead.") from None
    bad = [m for m in measures if m not in MEASURES]
    if bad or not measures:
        raise InputError(f"measures: expected some of {list(MEASURES)}. Got {measures!r} instead.")
    return list(dict.fromkeys(measures))


def check_reps(acts) -> np.ndarray:
    """``acts`` as a finite ``[n_reps >= 2, n_sentences >= 1, n_tokens >= 3, d]`` array."""
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
    """Linear CKA between two representations of the same ``n`` examples.

    ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``.  Invariant to
    orthogonal transforms and isotropic scaling; biased upward for small ``n`` (about ``d / n`` for
    independent Gaussians).

    Parameters
    ----------
    x : ndarray (n, d1)
    y : ndarray (n, d2)

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((100, 5))
    >>> round(linear_cka(x, 3 * x + 1), 6)
    1.0
    """
    x = check_tokens(x, "x")
    y = check_tokens(y, "y")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"y: expected {x.shape[0]} rows like x. Got {y.shape[0]} instead.")
    return float(cka_matrix([x, y])[0, 1])


def cka_matrix(reps: Sequence[np.ndarray]) -> np.ndarray:
    """Linear CKA between every pair of representations (each ``(n, d)``, same ``n``).

    Chooses token space (one ``n x n`` Gram per representation, then a Gram of Grams) or feature
    space (``d x d`` cross products per pair), whichever is cheaper; the results agree.

    Parameters
    ----------
    reps : sequence of ndarray (n, d_r)

    Returns
    -------
    ndarray (R, R), ones on the diagonal
    """
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


def debiased_cka_matrix(reps: Sequence[np.ndarray]) -> np.ndarray:
    """Debiased linear CKA between every pair of representations (each ``(n, d)``, same ``n >= 4``).

    CKA built from the unbiased HSIC estimator (Song et al. 2012; Kornblith et al. 2019, appendix):
    with ``K~`` a token Gram with its diagonal zeroed,
    ``HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``.  Two independent
    representations score about 0 whatever ``d / n`` (linear CKA scores about ``d / n``); it can be
    slightly negative.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.standard_normal((300, 400)), rng.standard_normal((300, 400))
    >>> m = debiased_cka_matrix([x, y, 2 * x])
    >>> bool(abs(m[0, 1]) < 0.05), float(round(m[0, 2], 6))
    (True, 1.0)
    """
    grams = []
    for x in reps:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(0)
        nrm = np.linalg.norm(x)
        x = x / nrm if nrm > 0 else x
        k = x @ x.T
        np.fill_diagonal(k, 0.0)
        grams.append(k)
    n = grams[0].shape[0]
    if n < 4:
        raise InputError(f"reps: debiased CKA needs at least 4 tokens. Got {n} instead.")
    sums = [k.sum() for k in grams]
    rows = [k.sum(axis=1) for k in grams]

    def hsic(a: int, b: int) -> float:
        t = float(np.sum(grams[a] * grams[b]))
        return (t + sums[a] * sums[b] / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(rows[a] @ rows[b])) / (n * (n - 3))

    R = len(grams)
    self_h = [hsic(a, a) for a in range(R)]
    out = np.eye(R)
    for a in range(R):
        for b in range(a + 1, R):
            den = np.sqrt(self_h[a] * self_h[b]) if self_h[a] > 0 and self_h[b] > 0 else np.nan
            out[a, b] = out[b, a] = hsic(a, b) / den
    return out


def gaussian_cka_baseline(n: int, d: int, *, seed: int = 0, repeats: int = 3) -> tuple[float, float]:
    """``(linear CKA, debiased CKA)`` between two independent isotropic Gaussians of shape ``(n, d)``, mean of repeats.

    What "no shared structure" scores with this many tokens: linear CKA about ``d / (n + d)``-ish
    (0.53 at 576 tokens x 640 dims), debiased CKA about 0.

    Examples
    --------
    >>> lin, deb = gaussian_cka_baseline(576, 640)
    >>> bool(0.45 < lin < 0.6), bool(abs(deb) < 0.02)
    (True, True)
    """
    rng = np.random.default_rng(seed)
    lin, deb = [], []
    for _ in range(repeats):
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        lin.append(cka_matrix([x, y])[0, 1])
        deb.append(debiased_cka_matrix([x, y])[0, 1])
    return float(np.mean(lin)), float(np.mean(deb))


def cosine_matrix(acts) -> np.ndarray:
    """Mean over tokens of the cosine between the same token's vectors at two layers.

    Parameters
    ----------
    acts : ndarray [R, S, T, d]

    Returns
    -------
    ndarray (R, R)
    """
    acts = np.asarray(acts, dtype=np.float32)
    R = acts.shape[0]
    u = acts.reshape(R, -1, acts.shape[-1]).astype(np.float64)
    u /= np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-30)
    n = u.shape[1]
    flat = u.reshape(R, -1)
    return (flat @ flat.T) / n


def tree_matrices(heads: np.ndarray, *, uas_skip: int = UAS_SKIP, ted: bool = True,
                  progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Mean UAS and mean normalised tree edit distance between every pair of layers.

    Parameters
    ----------
    heads : ndarray [R, S, T] of int
        StructLens trees (:func:`~featuregeo.tl.layers.trees.sentence_trees`).
    uas_skip : int, default=2
        UAS counts tokens from this index on (the first two tokens have no choice of head).
    ted : bool, default=True
        Also compute tree edit distances (slower).

    Returns
    -------
    dict
        ``"uas"``; with ``ted`` also ``"ted_distance"`` = ``mean(TED) / (2 T)`` (deleting and
        reinserting every token costs ``2 T``, so it lies in [0, 1]) and ``"ted"`` = ``1 - ted_distance``.
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
                l1, lab1 = postorder(heads[r, s], lab)
                prep[r][s] = (l1, lab1, keyroots(l1, T + 1))
        kern = ted_kernel(True)
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
    """Every requested measure for ``acts [R, S, T, d]``.

    Parameters
    ----------
    acts : ndarray [R, S, T, d]
    measures : sequence of str, default=("cosine", "cka", "uas", "ted")

    Returns
    -------
    dict measure -> ndarray (R, R)
        With ``"ted"`` also ``"ted_distance"``; with ``"cka"`` also ``"cka_debiased"``.
    """
    measures = check_measures(measures)
    acts = check_reps(acts)
    out: dict[str, np.ndarray] = {}
    if "cosine" in measures:
        out["cosine"] = cosine_matrix(acts)
    if "cka" in measures:
        R, S, T, d = acts.shape
        out["cka"] = cka_matrix([acts[r].reshape(S * T, d) for r in range(R)])
        out["cka_debiased"] = debiased_cka_matrix([acts[r].reshape(S * T, d) for r in range(R)])
    if "uas" in measures or "ted" in measures:
        t = tree_matrices(sentence_trees(acts), ted="ted" in measures, progress=progress)
        out.update({k: v for k, v in t.items() if k in measures or k == "ted_distance"})
    return out


def redundancy(sim: np.ndarray) -> list[RedundantBlock]:
    """Blocks ranked most redundant first: block ``L`` scores ``sim[L, L+1]`` (its input vs output).

    Ties go to the earlier block.

    Parameters
    ----------
    sim : ndarray (R, R), R >= 2

    Returns
    -------
    list of RedundantBlock, length R - 1
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise InputError(f"sim: expected a square matrix over >= 2 representations. Got shape {sim.shape} instead.")
    scores = np.array([sim[L, L + 1] for L in range(sim.shape[0] - 1)])
    order = sorted(range(scores.size), key=lambda L: (-scores[L], L))
    return [RedundantBlock(block=int(L), score=float(scores[L])) for L in order]
