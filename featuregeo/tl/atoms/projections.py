"""Distractors and linear projections of word-pair differences, scored on held-out pairs.

3. :func:`distractors` — PCA of the difference vectors and the correlation of each top component
   with the change in token count and in character length (the paper: PC1 tracks length).
4. :func:`evaluate_projections` — LDA (task = label) fitted on TRAIN pairs only; on TEST pairs,
   before and after the projection (``n_components`` 2 .. n_tasks-1) and against projecting out
   the top principal components: silhouette by task, nearest-centroid task accuracy and analogy
   accuracy.  Every map is linear and applied to word vectors; words are first centred by the mean
   of the TRAIN words (one shared shift for every method), so the projected difference of two words
   is exactly the difference of their projections.

:func:`analyze_pairs` runs both on one :class:`~featuregeo.tl.atoms.vectors.PairData` and returns a
:class:`SpaceScores`.  Undefined scores (too few pairs, one task) are ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import seed_sequence
from featuregeo.tl.atoms.vectors import MIN_PAIRS, PairData

DEFAULT_REMOVE_PCS = (1, 2, 4, 8)
METHODS = ("raw", "lda", "pc_removed")


def finite_or_none(x) -> float | None:
    """``float(x)``, or None when ``x`` is None, NaN or infinite."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r, NaN when fewer than 3 points or either side is constant."""
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def principal_axes(X: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` principal axes (rows, deterministic signs) of ``X`` and their explained-variance ratios."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    vt *= np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])[:, None]
    var = s**2
    return vt[:m], var[:m] / max(var.sum(), 1e-300)


# --------------------------------------------------------------------------------------------
# records


@dataclass
class Distractors:
    """PCA of all difference vectors of one layer and its correlation with length changes.

    Attributes
    ----------
    n_pairs : int
    explained_variance_ratio : ndarray
        Of the top components (fraction of the total variance).
    r_tokens, r_chars : ndarray
        Pearson r of each top component's score with the change in token count / characters (NaN
        when undefined).
    pc1_r_tokens, pc1_r_chars, pc1_rho_chars : float or None
        The same for PC1 (``rho``: Spearman).
    best_pc_chars : int or None
        The component (1-based) most correlated with the change in characters.
    """

    n_pairs: int
    explained_variance_ratio: np.ndarray
    r_tokens: np.ndarray
    r_chars: np.ndarray
    pc1_r_tokens: float | None = None
    pc1_r_chars: float | None = None
    pc1_rho_chars: float | None = None
    best_pc_chars: int | None = None


@dataclass
class MethodScore:
    """Scores of one vector space on the held-out (TEST) pairs.

    Attributes
    ----------
    method : str
        ``"raw"`` (centred word vectors), ``"lda"`` (projection on the first ``n_components`` LDA
        axes fitted on train pairs) or ``"pc_removed"`` (the top ``n_components`` principal components
        of the train differences projected out).
    n_components : int
        Dimensions of the space (raw), LDA components kept, or PCs removed.
    silhouette : float or None
        Silhouette of the test differences by task (-1..1).
    task_accuracy : float or None
        Nearest train-centroid task accuracy of the test differences (0..1).
    analogy_accuracy : float or None
        Fraction of test quadruples ``(a, b, c, d)`` of one task whose ``d`` is the cosine-nearest
        task word to ``b - a + c`` (0..1).
    n_quadruples : int
        Quadruples scored.
    pc1_r_tokens, pc1_r_chars : float or None
        ``|r|`` of PC1 of the test differences with the change in tokens / characters.
    analogy_by_task : dict of str to float
        Analogy accuracy per task.
    analogy_accuracy_all : float or None
        The same quadruples, but ``d`` must be the nearest among the words of *every* task's pairs
        (the whole vocabulary of pairs), not only its own task's words.
    validation_accuracy : float or None
        Score of this setting on a validation split of the TRAIN pairs (LDA / PC removal refitted on
        the rest of the train pairs): held-out analogy accuracy, or nearest-centroid task accuracy when
        the validation split has too few pairs for analogies.  Settings are chosen on it, never on test.
    chosen : bool
        The setting of its method chosen on ``validation_accuracy`` (what :func:`best_score` returns).
    """

    method: str
    n_components: int
    silhouette: float | None = None
    task_accuracy: float | None = None
    analogy_accuracy: float | None = None
    n_quadruples: int = 0
    pc1_r_tokens: float | None = None
    pc1_r_chars: float | None = None
    analogy_by_task: dict[str, float] = field(default_factory=dict)
    analogy_accuracy_all: float | None = None
    validation_accuracy: float | None = None
    chosen: bool = False


@dataclass
class Embedding:
    """2-D views of the held-out differences (for plotting).

    Attributes
    ----------
    task : ndarray
        Int ``[n_test]``: task index of each held-out pair.
    raw_pca : ndarray
        ``[n_test, 2]``: on the top 2 principal axes of the train differences.
    lda : ndarray
        ``[n_test, 2]``: on the first 2 LDA axes (second column zero with one axis).
    """

    task: np.ndarray
    raw_pca: np.ndarray
    lda: np.ndarray


@dataclass
class SpaceScores:
    """The pair analysis of one vector space: distractors, method scores, 2-D embedding.

    Attributes
    ----------
    space : str
        ``"residual"`` or ``"sae"`` (word vectors passed through the SAE).
    distractors : Distractors
    methods : list of MethodScore
    embedding : Embedding
    """

    space: str
    distractors: Distractors
    methods: list[MethodScore]
    embedding: Embedding

    def best(self, method: str, metric: str = "analogy_accuracy") -> MethodScore | None:
        """The record of ``method`` chosen on the validation split (see :func:`best_score`)."""
        return best_score(self.methods, method, metric)


def best_score(methods: Sequence[MethodScore], method: str, metric: str = "analogy_accuracy") -> MethodScore | None:
    """The record of ``method`` chosen on the validation split of the train pairs (``chosen``).

    Its test scores are the honest held-out result.  Only when no record was chosen (a validation
    split was impossible: too few train pairs) is the record with the highest test ``metric``
    returned, which is then an optimistic selection on test data.  None if there is none.
    """
    recs = [r for r in methods if r.method == method]
    chosen = [r for r in recs if r.chosen]
    if chosen:
        return chosen[0]
    recs = [r for r in recs if getattr(r, metric) is not None]
    return max(recs, key=lambda r: getattr(r, metric)) if recs else None


# --------------------------------------------------------------------------------------------
# 3. distractors


def distractors(diffs: np.ndarray, d_tokens: np.ndarray, d_chars: np.ndarray, *, n_components: int = 10) -> Distractors:
    """Correlation of the top principal components of difference vectors with length changes.

    Parameters
    ----------
    diffs : ndarray
        ``[n_pairs, d]`` difference vectors.
    d_tokens, d_chars : ndarray
        ``[n_pairs]`` change in token count / character length of each pair.
    n_components : int, default=10

    Returns
    -------
    Distractors
    """
    from scipy.stats import spearmanr

    diffs = np.asarray(diffs, dtype=np.float64)
    k = int(min(n_components, diffs.shape[0] - 1, diffs.shape[1]))
    if k < 1:
        raise InputError(f"diffs: expected at least 2 difference vectors. Got {diffs.shape[0]} instead.")
    axes, evr = principal_axes(diffs, k)
    S = (diffs - diffs.mean(0)) @ axes.T
    r_tok = np.array([pearson(S[:, i], d_tokens) for i in range(k)])
    r_chr = np.array([pearson(S[:, i], d_chars) for i in range(k)])
    rho = spearmanr(S[:, 0], d_chars).statistic if np.std(d_chars) > 0 else float("nan")
    best = int(np.nanargmax(np.abs(r_chr))) + 1 if np.isfinite(r_chr).any() else None
    return Distractors(n_pairs=int(diffs.shape[0]), explained_variance_ratio=np.asarray(evr, dtype=np.float64),
                       r_tokens=r_tok, r_chars=r_chr, pc1_r_tokens=finite_or_none(r_tok[0]),
                       pc1_r_chars=finite_or_none(r_chr[0]), pc1_rho_chars=finite_or_none(rho), best_pc_chars=best)


# --------------------------------------------------------------------------------------------
# 4. projections scored on held-out pairs


def fit_lda(diffs: np.ndarray, labels: np.ndarray, *, shrinkage: float | str | None = "auto"):
    """sklearn LDA on difference vectors (task = label); ``shrinkage`` uses the eigen solver."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if shrinkage is None:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    return lda.fit(np.asarray(diffs, dtype=np.float64), labels)


def pc_removal_map(diffs: np.ndarray, m: int) -> np.ndarray:
    """The linear map ``I - V^T V`` projecting out the top ``m`` principal components of ``diffs``."""
    V = principal_axes(diffs, m)[0]
    return np.eye(diffs.shape[1]) - V.T @ V


def _task_quadruples(data: PairData, k: int, max_quadruples: int, rng: np.random.Generator):
    """Test quadruples (a, b, c, d) of task ``k`` (a seeded sample of at most ``max_quadruples``)."""
    t = np.flatnonzero((data.task == k) & data.test)
    if t.size < 2:
        return None
    I, J = np.meshgrid(t, t, indexing="ij")
    I, J = I.ravel(), J.ravel()
    keep = I != J
    I, J = I[keep], J[keep]
    if I.size > max_quadruples:
        pick = np.sort(rng.choice(I.size, max_quadruples, replace=False))
        I, J = I[pick], J[pick]
    qa, qb, qc, qd = data.a[I], data.b[I], data.a[J], data.b[J]
    ok = (qd != qa) & (qd != qb) & (qd != qc)
    return qa[ok], qb[ok], qc[ok], qd[ok]


def analogy_accuracy(Z: np.ndarray, data: PairData, *, max_quadruples: int = 500, seed: int = 0,
                     key: int = 0, candidates: str = "task") -> tuple[float, int, dict[str, float]]:
    """Held-out analogy accuracy of word vectors ``Z`` (already mapped).

    For test pairs ``(a, b)`` and ``(c, d)`` of one task: is ``d`` the cosine-nearest word to
    ``b - a + c`` among the task's words (both sides, train and test), excluding ``a, b, c``?

    Parameters
    ----------
    Z : ndarray
        ``[n_words, d']`` mapped word vectors.
    data : PairData
    max_quadruples : int, default=500
        At most this many quadruples per task (a seeded sample; the same for every ``Z``).
    seed, key : int
        The sample is drawn from ``seed_sequence(seed, key)`` (e.g. ``key`` = the layer).
    candidates : {"task", "all"}, default="task"
        Nearest among the task's own words, or among the words of every pair of every task.

    Returns
    -------
    accuracy : float
        NaN when no quadruple could be scored.
    count : int
    per_task : dict of str to float
    """
    rng = seed_sequence(seed, key)
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-30)
    if candidates not in ("task", "all"):
        raise InputError(f"candidates: expected 'task' or 'all'. Got {candidates!r} instead.")
    hits = total = 0
    per: dict[str, float] = {}
    everything = np.unique(np.concatenate([data.a, data.b]))
    for k, name in enumerate(data.task_names):
        q = _task_quadruples(data, k, max_quadruples, rng)
        if q is None or q[0].size == 0:
            continue
        qa, qb, qc, qd = q
        sel = data.task == k
        cand = np.unique(np.concatenate([data.a[sel], data.b[sel]])) if candidates == "task" else everything
        v = Z[qb] - Z[qa] + Z[qc]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
        sims = v @ Zn[cand].T
        pos = {w: i for i, w in enumerate(cand)}
        for ex in (qa, qb, qc):
            sims[np.arange(len(ex)), [pos[w] for w in ex]] = -np.inf
        pred = cand[np.argmax(sims, axis=1)]
        h = int((pred == qd).sum())
        per[name] = h / qd.size
        hits += h
        total += qd.size
    return (hits / total if total else float("nan")), total, per


def score_space(method: str, n_components: int, W: np.ndarray | None, Xc: np.ndarray, data: PairData, *,
                max_quadruples: int, seed: int, key: int = 0) -> MethodScore:
    """Scores of the word vectors ``Xc @ W`` (``Xc`` when ``W`` is None) on the test pairs."""
    from sklearn.metrics import silhouette_score

    Z = Xc if W is None else Xc @ W
    D = Z[data.b] - Z[data.a]
    tr, te = ~data.test, data.test
    labels = data.task
    te_labels = labels[te]
    n_lab = np.unique(te_labels).size
    sil = float(silhouette_score(D[te], te_labels)) if 2 <= n_lab < te.sum() else None
    cents = np.stack([D[tr & (labels == k)].mean(0) if (tr & (labels == k)).any() else np.full(D.shape[1], np.inf)
                      for k in range(len(data.task_names))])
    d2 = ((D[te][:, None, :] - cents[None]) ** 2).sum(-1)
    task_acc = float((np.argmin(d2, 1) == te_labels).mean()) if te.any() else None
    acc, n, per = analogy_accuracy(Z, data, max_quadruples=max_quadruples, seed=seed, key=key)
    acc_all = analogy_accuracy(Z, data, max_quadruples=max_quadruples, seed=seed, key=key, candidates="all")[0]
    r_tok = r_chr = None
    Dt = D[te]
    if Dt.shape[0] >= 3 and Dt.shape[1] >= 1:
        Dc = Dt - Dt.mean(0)
        _, _, vt = np.linalg.svd(Dc, full_matrices=False)
        s = Dc @ vt[0]
        r_tok = finite_or_none(abs(pearson(s, data.d_tokens[te])))
        r_chr = finite_or_none(abs(pearson(s, data.d_chars[te])))
    return MethodScore(method=method, n_components=int(n_components), silhouette=finite_or_none(sil),
                       task_accuracy=finite_or_none(task_acc), analogy_accuracy=finite_or_none(acc),
                       n_quadruples=int(n), pc1_r_tokens=r_tok, pc1_r_chars=r_chr, analogy_by_task=per,
                       analogy_accuracy_all=finite_or_none(acc_all))


def _embedding(data: PairData, Xc: np.ndarray, Dtr: np.ndarray, scalings: np.ndarray) -> Embedding:
    te = data.test
    D = Xc[data.b] - Xc[data.a]
    if Dtr.shape[0] > 2:
        raw2 = (D[te] - Dtr.mean(0)) @ principal_axes(Dtr, 2)[0].T
    else:
        raw2 = np.zeros((int(te.sum()), 2))
    if raw2.shape[1] == 1:
        raw2 = np.column_stack([raw2[:, 0], np.zeros(len(raw2))])
    lda2 = D[te] @ scalings[:, : min(2, scalings.shape[1])]
    if lda2.shape[1] == 1:
        lda2 = np.column_stack([lda2[:, 0], np.zeros(len(lda2))])
    return Embedding(task=data.task[te].astype(np.int64), raw_pca=np.asarray(raw2, dtype=np.float64),
                     lda=np.asarray(lda2, dtype=np.float64))


def validation_split(data: PairData, fraction: float = 0.25, *, seed: int = 0) -> PairData | None:
    """The TRAIN pairs only, with ``test`` marking a seeded validation part of each task's train pairs.

    Every task keeps at least one fitting pair; a task with fewer than 2 train pairs gives no
    validation pair.  None when no task can spare a pair.
    """
    rng = seed_sequence(seed, 7919)
    tr = np.flatnonzero(~data.test)
    val = np.zeros(tr.size, dtype=bool)
    for k in range(len(data.task_names)):
        idx = np.flatnonzero(data.task[tr] == k)
        n_val = min(idx.size - 1, max(1, int(round(fraction * idx.size)))) if idx.size >= 2 else 0
        if n_val > 0:
            val[rng.choice(idx, n_val, replace=False)] = True
    if not val.any():
        return None
    return replace(data, a=data.a[tr], b=data.b[tr], task=data.task[tr], test=val)


def _validation_scores(data: PairData, ks: Sequence[int], remove_pcs: Sequence[int],
                       shrinkage: float | str | None, max_quadruples: int, seed: int, key: int
                       ) -> dict[tuple[str, int], float]:
    """``(method, n_components) -> validation score`` of every candidate setting (refitted on the fitting part)."""
    sub = validation_split(data, seed=seed + key)
    if sub is None:
        return {}
    tr = ~sub.test
    if np.unique(sub.task[tr]).size < len(sub.task_names):
        return {}
    mean = sub.X[np.unique(np.concatenate([sub.a[tr], sub.b[tr]]))].mean(0)
    Xc = (sub.X - mean).astype(np.float64)
    Dtr = Xc[sub.b[tr]] - Xc[sub.a[tr]]
    kw = dict(max_quadruples=max_quadruples, seed=seed, key=key)

    def val(W) -> float | None:
        s = score_space("v", 0, W, Xc, sub, **kw)
        return s.analogy_accuracy if s.analogy_accuracy is not None else s.task_accuracy

    out: dict[tuple[str, int], float] = {}
    lda = fit_lda(Dtr, sub.task[tr], shrinkage=shrinkage)
    for k in ks:
        if k <= lda.scalings_.shape[1]:
            v = val(lda.scalings_[:, :k])
            if v is not None:
                out[("lda", k)] = v
    for m in remove_pcs:
        if 1 <= m < min(Dtr.shape):
            v = val(pc_removal_map(Dtr, m))
            if v is not None:
                out[("pc_removed", m)] = v
    return out


def evaluate_projections(data: PairData, *, n_components: Sequence[int] | None = None,
                         remove_pcs: Sequence[int] = DEFAULT_REMOVE_PCS, shrinkage: float | str | None = "auto",
                         max_quadruples: int = 500, seed: int = 0, key: int = 0
                         ) -> tuple[list[MethodScore], Embedding]:
    """Score the raw space, LDA projections and PC-removal baselines on the TEST pairs.

    Parameters
    ----------
    data : PairData
        At least 2 tasks, each with a train pair.
    n_components : sequence of int, optional
        LDA components to keep (each in 1..n_tasks-1); default ``2 .. n_tasks-1``.
    remove_pcs : sequence of int, default=(1, 2, 4, 8)
        PC-removal baselines (values not below the number of train pairs are skipped).
    shrinkage : float, "auto" or None, default="auto"
    max_quadruples : int, default=500
    seed, key : int
        Seed of the analogy quadruple sample (see :func:`analogy_accuracy`).

    Returns
    -------
    methods : list of MethodScore
        ``raw`` first, then ``lda`` by ``n_components``, then ``pc_removed``.  Each LDA / PC-removal
        record carries its ``validation_accuracy`` on a validation split of the train pairs, and the
        best of each method there is marked ``chosen`` (ties: the fewer components).
    embedding : Embedding
        The LDA view uses the chosen LDA axes' first two.
    """
    n_tasks = len(data.task_names)
    if n_tasks < 2:
        raise InputError(f"tasks: LDA needs at least 2 tasks with >= {MIN_PAIRS} pairs. Got {n_tasks} instead.")
    tr = ~data.test
    if np.unique(data.task[tr]).size < n_tasks:
        raise InputError("tasks: some task has no train pair; expected more pairs per task or another seed")
    mean = data.X[np.unique(np.concatenate([data.a[tr], data.b[tr]]))].mean(0)
    Xc = (data.X - mean).astype(np.float64)
    Dtr = Xc[data.b[tr]] - Xc[data.a[tr]]
    kw = dict(max_quadruples=max_quadruples, seed=seed, key=key)
    records = [score_space("raw", Xc.shape[1], None, Xc, data, **kw)]
    lda = fit_lda(Dtr, data.task[tr], shrinkage=shrinkage)
    max_k = min(n_tasks - 1, lda.scalings_.shape[1])
    ks = sorted(set(n_components)) if n_components is not None else (list(range(2, max_k + 1)) or [1])
    for k in ks:
        if not 1 <= k <= max_k:
            raise InputError(f"n_components: expected values in 1..{max_k} (n_tasks - 1). Got {k} instead.")
        records.append(score_space("lda", k, lda.scalings_[:, :k], Xc, data, **kw))
    for m in remove_pcs:
        if 1 <= m < min(Dtr.shape):
            records.append(score_space("pc_removed", m, pc_removal_map(Dtr, m), Xc, data, **kw))
    val = _validation_scores(data, ks, remove_pcs, shrinkage, max_quadruples, seed, key)
    for method in ("lda", "pc_removed"):
        recs = [r for r in records if r.method == method]
        for r in recs:
            r.validation_accuracy = finite_or_none(val.get((method, r.n_components)))
        scored = [r for r in recs if r.validation_accuracy is not None]
        if scored:
            max(scored, key=lambda r: (r.validation_accuracy, -r.n_components)).chosen = True
    return records, _embedding(data, Xc, Dtr, lda.scalings_)


def analyze_pairs(data: PairData, *, space: str = "residual", n_components: Sequence[int] | None = None,
                  remove_pcs: Sequence[int] = DEFAULT_REMOVE_PCS, shrinkage: float | str | None = "auto",
                  max_quadruples: int = 500, seed: int = 0, key: int = 0) -> SpaceScores:
    """Distractors and held-out projection scores for one :class:`PairData`.

    Parameters
    ----------
    data : PairData
    space : str, default="residual"
        A name for the vector space (``"residual"`` or ``"sae"``).
    n_components, remove_pcs, shrinkage, max_quadruples, seed, key
        See :func:`evaluate_projections`.

    Returns
    -------
    SpaceScores

    Examples
    --------
    >>> data = build_pair_data(tasks, words, X, n_tokens)            # doctest: +SKIP
    >>> scores = analyze_pairs(data)                                 # doctest: +SKIP
    >>> scores.best("lda").analogy_accuracy                          # doctest: +SKIP
    """
    dis = distractors(data.diffs, data.d_tokens, data.d_chars)
    recs, emb = evaluate_projections(data, n_components=n_components, remove_pcs=remove_pcs, shrinkage=shrinkage,
                                     max_quadruples=max_quadruples, seed=seed, key=key)
    return SpaceScores(space=space, distractors=dis, methods=recs, embedding=emb)


__all__ = [
    "DEFAULT_REMOVE_PCS",
    "METHODS",
    "Distractors",
    "Embedding",
    "MethodScore",
    "SpaceScores",
    "analogy_accuracy",
    "analyze_pairs",
    "best_score",
    "validation_split",
    "distractors",
    "evaluate_projections",
    "finite_or_none",
    "fit_lda",
    "pc_removal_map",
    "pearson",
    "principal_axes",
    "score_space",
]
