"""Atom scale: function vectors of word pairs, distractor directions, LDA scored on held-out pairs,
and a search for crystals (parallelograms and trapezoids) among SAE decoder rows.

Pipeline (Li et al. 2025, section "atom scale", with held-out scoring added):

1. :func:`word_vectors` — each word, written into a template (default ``" {word}"``), is read at
   the residual stream of a layer at its last token (multi-token words are handled by that rule
   and counted).  Optionally through an SAE (encode, then decode).
2. :func:`build_pair_data` — one difference vector ``b - a`` per pair; train/test split by pair.
3. :func:`distractors` — PCA of the difference vectors and the correlation of each top component
   with the change in token count and in character length (the paper: PC1 tracks length).
4. :func:`evaluate_projections` — LDA (task = label) fitted on TRAIN pairs only; on TEST pairs,
   before and after the projection (``n_components`` 2 .. n_tasks-1) and against projecting out
   the top principal components: silhouette by task, nearest-centroid task accuracy and analogy
   accuracy.  Every map is linear and applied to word vectors; words are first centred by the mean
   of the TRAIN words (one shared shift for every method), so the projected difference of two words
   is exactly the difference of their projections.
5. :func:`find_crystals` — unlabeled quadruples ``(a, b, c, d)`` of SAE features with
   ``b - a ≈ d - c``: candidate pairs are each feature with its k nearest features, matching pairs
   are nearest neighbours among normalised difference vectors (pynndescent for large sets, exact
   brute force otherwise), every match is rescored exactly; an exhaustive mode checks all pairs.

Analyses take and return plain numpy arrays and :class:`~featuregeo.core.results.Result` objects; only
:func:`word_vectors` touches a model (through :mod:`featuregeo.io.models`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from featuregeo.core.util import resolve_rng
from featuregeo.core.errors import InputError
from featuregeo.io.pairs import PairTask, pair_fraction, split_pairs
from featuregeo.core.results import LegacyResult as Result, register

DEFAULT_TEMPLATE = " {word}"
DEFAULT_REMOVE_PCS = (1, 2, 4, 8)
CRYSTAL_COLUMNS = ("rank", "layer", "a", "b", "c", "d", "cosine", "length_ratio", "kind", "score")
MIN_PAIRS = 3


# --------------------------------------------------------------------------------------------
# 1. word vectors


def _check_template(template: str) -> None:
    if not isinstance(template, str) or "{word}" not in template:
        raise InputError(f"template: expected a string containing '{{word}}', e.g. ' {{word}}'. Got {template!r} instead.")


def word_vectors(model, words: Sequence[str], layers: int | Sequence[int], *, template: str = DEFAULT_TEMPLATE,
                 batch_size: int = 64, saes: Mapping[int, Any] | None = None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Last-token residual vectors of words, several layers from one forward pass per batch.

    Parameters
    ----------
    model : LoadedModel
        From :func:`featuregeo.io.models.load_model`.
    words : sequence of str
    layers : int or sequence of int
        Out of range raises InputError naming the valid range.
    template : str, default=" {word}"
        Each word is read as ``template.format(word=word)`` after BOS; the vector is the residual
        stream at the template's last token.
    batch_size : int, default=64
    saes : mapping layer -> sae-lens SAE, optional
        When given, the vectors of those layers are the SAE reconstructions ``decode(encode(x))``.

    Returns
    -------
    vectors : dict layer -> float32 array [n_words, d_model]
    n_tokens : int array [n_words], tokens of the filled template (without BOS)
    """
    import torch

    from featuregeo.io.models import check_layers, iter_residual_stream

    _check_template(template)
    words = [str(w) for w in words]
    if not words:
        raise InputError("words: expected at least one word")
    layers = check_layers(model, layers)
    texts = [template.format(word=w) for w in words]
    tok = model.tokenizer
    n_tokens = np.array([len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts], dtype=np.int64)
    order = np.argsort(n_tokens, kind="stable")  # similar lengths per batch: less padding
    out = {L: np.zeros((len(words), model.d_model), dtype=np.float32) for L in layers}
    pos = 0
    for b in iter_residual_stream(model, [texts[i] for i in order], layers, batch_size=batch_size, seq_len=None,
                                  add_bos=True, drop_bos=False, out_dtype="float32"):
        m = b.mask.numpy()
        last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
        rows = order[pos: pos + len(m)]
        for L in layers:
            out[L][rows] = b.acts[L].numpy()[np.arange(len(m)), last]
        pos += len(m)
    for L, sae in (saes or {}).items():
        if L in out:
            with torch.no_grad():
                x = torch.as_tensor(out[L], dtype=sae.W_dec.dtype)
                out[L] = sae.decode(sae.encode(x)).float().numpy()
    return out, n_tokens


# --------------------------------------------------------------------------------------------
# 2. pair data


@dataclass
class PairData:
    """Word vectors and the pairs over them.

    words : list of str; X : [n_words, d] word vectors; a, b : int arrays [n_pairs] (word indices);
    task : int array [n_pairs] (index into ``task_names``); test : bool array [n_pairs];
    n_tokens : int array [n_words]; tasks : per-task records; skipped : tasks left out, with reasons.
    """

    words: list[str]
    X: np.ndarray
    a: np.ndarray
    b: np.ndarray
    task: np.ndarray
    test: np.ndarray
    n_tokens: np.ndarray
    task_names: list[str]
    tasks: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def diffs(self) -> np.ndarray:
        return self.X[self.b] - self.X[self.a]

    @property
    def d_tokens(self) -> np.ndarray:
        return (self.n_tokens[self.b] - self.n_tokens[self.a]).astype(np.float64)

    @property
    def d_chars(self) -> np.ndarray:
        lens = np.array([len(w) for w in self.words], dtype=np.float64)
        return lens[self.b] - lens[self.a]


def task_words(tasks: Sequence[PairTask]) -> list[str]:
    """Unique words of all tasks, in first-seen order."""
    return list(dict.fromkeys(w for t in tasks for p in t.pairs for w in p))


def cap_pairs(task: PairTask, max_pairs: int | None, seed: int = 0) -> PairTask:
    """At most ``max_pairs`` pairs, chosen by pair hash (deterministic, independent of order)."""
    if max_pairs is None or task.n_pairs <= max_pairs:
        return task
    keep = sorted(task.pairs, key=lambda p: pair_fraction(p, seed + 7919))[:max_pairs]
    keep_set = set(keep)
    return dataclasses.replace(task, pairs=tuple(p for p in task.pairs if p in keep_set),
                               notes=task.notes + (f"capped at {max_pairs} of {task.n_pairs} pairs",))


def build_pair_data(tasks: Sequence[PairTask], words: Sequence[str], X: np.ndarray, n_tokens: np.ndarray, *,
                    test_fraction: float = 0.3, seed: int = 0, min_pairs: int = MIN_PAIRS) -> PairData:
    """Index the pairs of ``tasks`` into the word table and split them by pair.

    Tasks with fewer than ``min_pairs`` pairs are skipped with a note.
    """
    index = {w: i for i, w in enumerate(words)}
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != len(words):
        raise InputError(f"X: expected [{len(words)}, d_model] word vectors. Got shape {X.shape} instead.")
    if not np.isfinite(X).all():
        raise InputError("X: word vectors contain NaN/inf; expected finite activations")
    a, b, tk, te, recs, skipped, names = [], [], [], [], [], [], []
    for t in tasks:
        missing = [w for p in t.pairs for w in p if w not in index]
        if missing:
            raise InputError(f"words: task {t.name!r} uses words without vectors, e.g. {missing[:3]}")
        if t.n_pairs < min_pairs:
            skipped.append({"task": t.name, "reason": f"{t.n_pairs} pair(s) after removing {t.n_duplicates} "
                            f"duplicate(s); at least {min_pairs} needed", "source": t.source})
            continue
        train, test = split_pairs(t, test_fraction, seed)
        k = len(names)
        names.append(t.name)
        for side, ps in ((False, train), (True, test)):
            for p in ps:
                a.append(index[p[0]])
                b.append(index[p[1]])
                tk.append(k)
                te.append(side)
        tw = {w for p in t.pairs for w in p}
        recs.append({**t.describe(), "n_train": len(train), "n_test": len(test),
                     "n_multi_token_words": int(sum(n_tokens[index[w]] > 1 for w in tw)),
                     "n_words": len(tw)})
    return PairData(words=list(words), X=X, a=np.array(a, dtype=np.int64), b=np.array(b, dtype=np.int64),
                    task=np.array(tk, dtype=np.int64), test=np.array(te, dtype=bool),
                    n_tokens=np.asarray(n_tokens, dtype=np.int64), task_names=names, tasks=recs, skipped=skipped)


# --------------------------------------------------------------------------------------------
# 3. distractors


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def distractors(diffs: np.ndarray, d_tokens: np.ndarray, d_chars: np.ndarray, *, n_components: int = 10) -> dict:
    """Correlation of the top principal components of difference vectors with length changes.

    Returns a dict: ``explained_variance_ratio`` (top components), ``pc1_r_tokens`` and
    ``pc1_r_chars`` (Pearson r of the PC1 score with the change in token count / characters),
    ``pc1_rho_chars`` (Spearman), and per-component ``r_tokens`` / ``r_chars`` lists.
    """
    from scipy.stats import spearmanr

    diffs = np.asarray(diffs, dtype=np.float64)
    k = int(min(n_components, diffs.shape[0] - 1, diffs.shape[1]))
    if k < 1:
        raise InputError(f"diffs: expected at least 2 difference vectors. Got {diffs.shape[0]} instead.")
    axes, evr = _principal_axes(diffs, k)
    S = (diffs - diffs.mean(0)) @ axes.T
    r_tok = [_pearson(S[:, i], d_tokens) for i in range(k)]
    r_chr = [_pearson(S[:, i], d_chars) for i in range(k)]
    rho = spearmanr(S[:, 0], d_chars).statistic if np.std(d_chars) > 0 else float("nan")
    return {"n_pairs": int(diffs.shape[0]), "explained_variance_ratio": evr.tolist(),
            "pc1_r_tokens": r_tok[0], "pc1_r_chars": r_chr[0], "pc1_rho_chars": float(rho),
            "r_tokens": r_tok, "r_chars": r_chr,
            "best_pc_chars": int(np.nanargmax(np.abs(r_chr))) + 1 if np.isfinite(r_chr).any() else None}


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


def _principal_axes(X: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` principal axes (rows) of X and the explained-variance ratios (centred thin SVD)."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    vt *= np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])[:, None]  # deterministic signs
    var = s**2
    return vt[:m], var[:m] / max(var.sum(), 1e-300)


def pc_removal_map(diffs: np.ndarray, m: int) -> np.ndarray:
    """The linear map ``I - V^T V`` projecting out the top ``m`` principal components of ``diffs``."""
    V = _principal_axes(diffs, m)[0]
    return np.eye(diffs.shape[1]) - V.T @ V


def analogy_accuracy(Z: np.ndarray, data: PairData, *, max_quadruples: int = 500, seed: int = 0) -> tuple[float, int, dict]:
    """Held-out analogy accuracy of word vectors ``Z`` (already mapped).

    For test pairs ``(a, b)`` and ``(c, d)`` of one task: is ``d`` the cosine-nearest word to
    ``b - a + c`` among the task's words (both sides, train and test), excluding ``a, b, c``?
    At most ``max_quadruples`` quadruples per task (a seeded sample).  Returns (accuracy, count, per task).
    """
    rng = resolve_rng(seed)
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-30)
    hits = total = 0
    per: dict[str, float] = {}
    for k, name in enumerate(data.task_names):
        sel = data.task == k
        cand = np.unique(np.concatenate([data.a[sel], data.b[sel]]))
        t = np.flatnonzero(sel & data.test)
        if t.size < 2:
            continue
        I, J = np.meshgrid(t, t, indexing="ij")
        I, J = I.ravel(), J.ravel()
        keep = I != J
        I, J = I[keep], J[keep]
        if I.size > max_quadruples:
            pick = np.sort(rng.choice(I.size, max_quadruples, replace=False))
            I, J = I[pick], J[pick]
        qa, qb, qc, qd = data.a[I], data.b[I], data.a[J], data.b[J]
        ok = (qd != qa) & (qd != qb) & (qd != qc)
        qa, qb, qc, qd = qa[ok], qb[ok], qc[ok], qd[ok]
        if qa.size == 0:
            continue
        q = Z[qb] - Z[qa] + Z[qc]
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        sims = q @ Zn[cand].T
        pos = {w: i for i, w in enumerate(cand)}
        for ex in (qa, qb, qc):
            sims[np.arange(len(ex)), [pos[w] for w in ex]] = -np.inf
        pred = cand[np.argmax(sims, axis=1)]
        h = int((pred == qd).sum())
        per[name] = h / qd.size
        hits += h
        total += qd.size
    return (hits / total if total else float("nan")), total, per


def _score_space(W: np.ndarray | None, Xc: np.ndarray, data: PairData, *, max_quadruples: int, seed: int) -> dict:
    from sklearn.metrics import silhouette_score

    Z = Xc if W is None else Xc @ W
    D = Z[data.b] - Z[data.a]
    tr, te = ~data.test, data.test
    labels = data.task
    out: dict = {}
    te_labels = labels[te]
    n_lab = np.unique(te_labels).size
    out["silhouette"] = (float(silhouette_score(D[te], te_labels)) if 2 <= n_lab < te.sum() else float("nan"))
    cents = np.stack([D[tr & (labels == k)].mean(0) if (tr & (labels == k)).any() else np.full(D.shape[1], np.inf)
                      for k in range(len(data.task_names))])
    d2 = ((D[te][:, None, :] - cents[None]) ** 2).sum(-1)
    out["task_accuracy"] = float((np.argmin(d2, 1) == te_labels).mean()) if te.any() else float("nan")
    acc, n, per = analogy_accuracy(Z, data, max_quadruples=max_quadruples, seed=seed)
    out.update(analogy_accuracy=acc, n_quadruples=n, analogy_by_task=per)
    Dt = D[te]
    if Dt.shape[0] >= 3 and Dt.shape[1] >= 1:
        Dc = Dt - Dt.mean(0)
        _, _, vt = np.linalg.svd(Dc, full_matrices=False)
        s = Dc @ vt[0]
        out["pc1_r_tokens"] = abs(_pearson(s, data.d_tokens[te]))
        out["pc1_r_chars"] = abs(_pearson(s, data.d_chars[te]))
    return out


def evaluate_projections(data: PairData, *, n_components: Sequence[int] | None = None,
                         remove_pcs: Sequence[int] = DEFAULT_REMOVE_PCS, shrinkage: float | str | None = "auto",
                         max_quadruples: int = 500, seed: int = 0) -> tuple[list[dict], dict]:
    """Score the raw space, LDA projections and PC-removal baselines on the TEST pairs.

    Returns (records, embedding): one record per method (``method`` in {"raw", "lda", "pc_removed"},
    ``n_components`` = LDA components kept or PCs removed) with silhouette, task accuracy, analogy
    accuracy, quadruple count and |r| of the test differences' PC1 with length changes; and 2-D
    coordinates of the test differences before (PCA fitted on train) and after LDA, for plotting.
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
    kw = dict(max_quadruples=max_quadruples, seed=seed)
    records = [{"method": "raw", "n_components": int(Xc.shape[1]), **_score_space(None, Xc, data, **kw)}]
    lda = fit_lda(Dtr, data.task[tr], shrinkage=shrinkage)
    max_k = min(n_tasks - 1, lda.scalings_.shape[1])
    ks = sorted(set(n_components)) if n_components is not None else (list(range(2, max_k + 1)) or [1])
    for k in ks:
        if not 1 <= k <= max_k:
            raise InputError(f"n_components: expected values in 1..{max_k} (n_tasks - 1). Got {k} instead.")
        W = lda.scalings_[:, :k]
        records.append({"method": "lda", "n_components": int(k), **_score_space(W, Xc, data, **kw)})
    for m in remove_pcs:
        if 1 <= m < min(Dtr.shape):
            records.append({"method": "pc_removed", "n_components": int(m),
                            **_score_space(pc_removal_map(Dtr, m), Xc, data, **kw)})
    # 2-D views of the held-out differences
    te = data.test
    D = Xc[data.b] - Xc[data.a]
    raw2 = ((D[te] - Dtr.mean(0)) @ _principal_axes(Dtr, 2)[0].T if Dtr.shape[0] > 2 else np.zeros((te.sum(), 2)))
    W2 = lda.scalings_[:, : min(2, lda.scalings_.shape[1])]
    lda2 = D[te] @ W2
    if lda2.shape[1] == 1:
        lda2 = np.column_stack([lda2[:, 0], np.zeros(len(lda2))])
    emb = {"task": data.task[te].tolist(), "raw_pca": raw2.tolist(), "lda": lda2.tolist()}
    return records, emb


# --------------------------------------------------------------------------------------------
# result


@register
@dataclass
class AtomResult(Result):
    """Atom-scale analysis of one layer (one vector space).

    ``methods`` holds one record per method and ``n_components`` (see :func:`evaluate_projections`);
    ``distractors`` the PCA / length correlations of all difference vectors; ``embedding`` the 2-D
    views of held-out differences; ``crystals`` a summary of the crystal search (the table itself is
    ``crystals.csv``).
    """

    kind = "atoms"
    layer: int | None = None
    space: str = "residual"
    params: dict = field(default_factory=dict)
    tasks: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    task_names: list = field(default_factory=list)
    n_pairs: int = 0
    n_test: int = 0
    distractors: dict = field(default_factory=dict)
    methods: list = field(default_factory=list)
    embedding: dict = field(default_factory=dict)
    crystals: dict = field(default_factory=dict)

    def best(self, method: str, metric: str = "analogy_accuracy") -> dict | None:
        recs = [r for r in self.methods if r["method"] == method and r.get(metric) is not None]
        return max(recs, key=lambda r: r[metric]) if recs else None


def analyze_pairs(data: PairData, *, layer: int | None = None, space: str = "residual",
                  n_components: Sequence[int] | None = None, remove_pcs: Sequence[int] = DEFAULT_REMOVE_PCS,
                  shrinkage: float | str | None = "auto", max_quadruples: int = 500, seed: int = 0,
                  params: dict | None = None) -> AtomResult:
    """Distractors and held-out projection scores for one :class:`PairData`."""
    dis = distractors(data.diffs, data.d_tokens, data.d_chars)
    recs, emb = evaluate_projections(data, n_components=n_components, remove_pcs=remove_pcs, shrinkage=shrinkage,
                                     max_quadruples=max_quadruples, seed=seed)
    p = {"n_components": None if n_components is None else list(n_components), "remove_pcs": list(remove_pcs),
         "shrinkage": shrinkage, "max_quadruples": max_quadruples, "seed": seed,
         "centering": "words centred by the mean train word; all maps linear", **(params or {})}
    return AtomResult(layer=layer, space=space, params=p, tasks=data.tasks, skipped=data.skipped,
                      task_names=data.task_names, n_pairs=int(data.a.size), n_test=int(data.test.sum()),
                      distractors=dis, methods=recs, embedding=emb)


# --------------------------------------------------------------------------------------------
# 5. crystals


@register
@dataclass
class CrystalResult(Result):
    """Crystals found among feature vectors: quadruples (a, b, c, d) with b - a ≈ d - c.

    ``crystals`` rows carry the original feature ids (``a, b, c, d``), ``cosine`` of the two
    difference vectors, ``length_ratio`` (shorter / longer, in (0, 1]), ``kind`` (parallelogram when
    ``length_ratio >= params['parallelogram_ratio']``, else trapezoid), ``score`` and labels when
    given.  ``examples`` holds 2-D coordinates of the top quadruples (for plotting).
    """

    kind = "crystals"
    layer: int | None = None
    params: dict = field(default_factory=dict)
    n_features: int = 0
    n_candidate_pairs: int = 0
    n_matches: int = 0
    crystals: list = field(default_factory=list)
    examples: list = field(default_factory=list)

    def quadruples(self) -> set[tuple[int, int, int, int]]:
        """Canonical forms of the found quadruples (see :func:`canonical_quadruple`)."""
        return {canonical_quadruple(*(int(r[k]) for k in "abcd")) for r in self.crystals}

    def write_csv(self, path) -> Any:
        import io

        from featuregeo.core.util import atomic_write_text

        buf = io.StringIO()
        buf.write(",".join(CRYSTAL_COLUMNS) + "\n")
        for r in self.crystals:
            buf.write(f"{r['rank']},{'' if self.layer is None else self.layer},{r['a']},{r['b']},{r['c']},{r['d']},"
                      f"{r['cosine']:.6f},{r['length_ratio']:.6f},{r['kind']},{r['score']:.6f}\n")
        return atomic_write_text(path, buf.getvalue())


def canonical_quadruple(a: int, b: int, c: int, d: int) -> tuple[int, int, int, int]:
    """The smallest of the equivalent forms (a,b,c,d) ~ (c,d,a,b) ~ (b,a,d,c) ~ (d,c,b,a)."""
    return min((a, b, c, d), (c, d, a, b), (b, a, d, c), (d, c, b, a))


def _quad_geometry(V: np.ndarray, a, b, c, d, gram: np.ndarray | None = None,
                   chunk: int = 16384) -> tuple[np.ndarray, ...]:
    """cos(b - a, d - c), |b - a|, |d - c| and the shorter rung min(|c - a|, |d - b|).

    From ``gram = V V^T`` lookups when given, else from the four rows gathered once per chunk.
    """
    if gram is not None:
        dot = lambda i, j: gram[i, j].astype(np.float64)  # noqa: E731
        aa, bb, cc, dd = dot(a, a), dot(b, b), dot(c, c), dot(d, d)
        l1 = np.sqrt(np.maximum(aa + bb - 2 * dot(a, b), 0.0))
        l2 = np.sqrt(np.maximum(cc + dd - 2 * dot(c, d), 0.0))
        num = dot(b, d) - dot(b, c) - dot(a, d) + dot(a, c)
        rung = np.sqrt(np.maximum(np.minimum(aa + cc - 2 * dot(a, c), bb + dd - 2 * dot(b, d)), 0.0))
        return num / np.maximum(l1 * l2, 1e-30), l1, l2, rung
    out = np.empty((4, len(a)), dtype=np.float64)
    for s in range(0, len(a), chunk):
        sl = slice(s, s + chunk)
        Va, Vb, Vc, Vd = V[a[sl]], V[b[sl]], V[c[sl]], V[d[sl]]
        u1, u2 = Vb - Va, Vd - Vc
        nrm = lambda x: np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))  # noqa: E731
        out[1, sl], out[2, sl] = nrm(u1), nrm(u2)
        out[0, sl] = np.einsum("ij,ij->i", u1, u2, dtype=np.float64)
        out[3, sl] = np.minimum(nrm(Vc - Va), nrm(Vd - Vb))
    l1, l2 = out[1], out[2]
    return out[0] / np.maximum(l1 * l2, 1e-30), l1, l2, out[3]


def _knn_pairs(V: np.ndarray, k: int) -> np.ndarray:
    """Unordered pairs (i < j) of each row with its k nearest rows by cosine (exact, sklearn)."""
    from sklearn.neighbors import NearestNeighbors

    Vn = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
    k = min(k, V.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean").fit(Vn)
    idx = nn.kneighbors(Vn, return_distance=False)
    i = np.repeat(np.arange(V.shape[0]), idx.shape[1])
    j = idx.ravel()
    keep = i != j
    p = np.stack([np.minimum(i, j), np.maximum(i, j)], 1)[keep]
    return np.unique(p, axis=0)


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


def _match_exhaustive(U: np.ndarray, min_cos: float, chunk: int = 1024, *, use_numba: bool = True
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
    P, Q, S = [], [], []
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


def _match_pynndescent(U: np.ndarray, match_k: int, seed: int) -> tuple[np.ndarray, ...]:
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


def find_crystals(vectors: np.ndarray, *, feature_ids: np.ndarray | None = None, labels: Mapping[int, str] | None = None,
                  layer: int | None = None, mode: str = "ann", k: int = 10, match_k: int = 10, min_cosine: float = 0.4,
                  parallelogram_ratio: float = 0.8, min_rung: float = 0.5, top: int = 200, normalize: bool = True, remove_pcs: int = 0,
                  projection: np.ndarray | None = None, ann_dim: int = 256, backend: str = "auto",
                  projection_margin: float = 0.15, pynndescent_above: int = 400_000, n_examples: int = 6, seed: int = 0) -> CrystalResult:
    """Search feature vectors (e.g. SAE decoder rows) for parallelograms and trapezoids.

    Parameters
    ----------
    vectors : array [n_features, d]
    feature_ids : int array [n_features], optional
        Original ids reported in the output (default ``0..n-1``).
    labels : mapping id -> str, optional
        Added to the output rows as ``label_a`` .. ``label_d``.
    mode : {"ann", "exhaustive"}, default="ann"
        ``"ann"``: candidate pairs are each feature with its ``k`` nearest features (cosine); each
        candidate pair's normalised difference is matched to the other candidate differences
        (either sign), see ``backend``; every match is rescored exactly in the full space.
        ``"exhaustive"``: all pairs of features, all matches, exact (small sets only).
    min_cosine : float, default=0.4
        Keep quadruples whose two differences have |cosine| >= this (after orienting them).
    parallelogram_ratio : float, default=0.8
        ``length_ratio`` (shorter / longer side) at or above which a crystal is a parallelogram.
    min_rung : float, default=0.5
        Drop quadruples whose shorter rung (``|c - a|`` or ``|d - b|``) is below this fraction of the
        longer side: with a near-duplicate ``c ≈ a``, ``x - a`` and ``y - c`` are parallel for any
        ``x, y`` (a degenerate triangle, e.g. around split features).
    top : int, default=200
        Rows returned, best score first (``score`` = cosine).
    normalize : bool, default=True
        Scale rows to unit norm first (SAE decoder norms are arbitrary per feature).
    remove_pcs : int, default=0
        Project out the top principal components of the rows first (a PC-filtered space).
    projection : array [d, d'], optional
        Search in the space ``vectors @ projection`` (e.g. LDA scalings), applied after the above.
    backend : {"auto", "brute", "projected", "pynndescent"}, default="auto"
        How differences are matched in ANN mode.  ``"brute"``: exact chunked products in the full
        space, every match above ``min_cosine``.  ``"projected"``: the same in a seeded Gaussian
        random projection to ``ann_dim`` dimensions (Johnson-Lindenstrauss) with threshold
        ``min_cosine - projection_margin``.  ``"pynndescent"``: the ``match_k`` approximate nearest
        differences of each (in the projection; its numba compilation costs about a minute per
        process).  ``"auto"``: brute when cheap (pairs² x d <= 4e11), pynndescent above
        ``pynndescent_above`` candidate pairs, projected in between.
    seed : int, default=0

    Returns
    -------
    CrystalResult
    """
    if mode not in ("ann", "exhaustive"):
        raise InputError(f"mode: expected 'ann' or 'exhaustive'. Got {mode!r} instead.")
    if backend not in ("auto", "brute", "projected", "pynndescent"):
        raise InputError(f"backend: expected 'auto', 'brute', 'projected' or 'pynndescent'. Got {backend!r} instead.")
    V = np.asarray(vectors, dtype=np.float32)
    if V.ndim != 2 or V.shape[0] < 4:
        raise InputError(f"vectors: expected [n_features >= 4, d]. Got shape {V.shape} instead.")
    if not np.isfinite(V).all():
        raise InputError("vectors: contain NaN/inf; expected finite rows")
    if not 0.0 < min_cosine <= 1.0:
        raise InputError(f"min_cosine: expected a number in (0, 1]. Got {min_cosine!r} instead.")
    n = V.shape[0]
    ids = np.arange(n) if feature_ids is None else np.asarray(feature_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InputError(f"feature_ids: expected {n} ids. Got shape {ids.shape} instead.")
    if mode == "exhaustive" and n > 400:
        raise InputError(f"mode: 'exhaustive' checks all {n * (n - 1) // 2} pairs of pairs squared; expected "
                         "n_features <= 400, or mode='ann'")
    if normalize:
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
    if remove_pcs:
        from sklearn.decomposition import PCA

        comps = PCA(n_components=int(remove_pcs), svd_solver="randomized", random_state=seed).fit(V).components_
        V = (V - (V @ comps.T) @ comps).astype(np.float32)
    if projection is not None:
        V = (V @ np.asarray(projection, dtype=np.float32)).astype(np.float32)
    rng = resolve_rng(seed)
    if mode == "exhaustive":
        iu, ju = np.triu_indices(n, 1)
        pairs = np.stack([iu, ju], 1)
    else:
        pairs = _knn_pairs(V, k)
    pa, pb = pairs[:, 0], pairs[:, 1]
    M = len(pairs)
    if mode == "exhaustive":
        how = "exact"
    elif backend == "auto":
        how = ("pynndescent" if M > pynndescent_above else
               "exact" if M * M * V.shape[1] <= 4e11 or V.shape[1] <= ann_dim else "projected")
    else:
        how = {"brute": "exact"}.get(backend, backend)
    use_nnd = how == "pynndescent"
    R = None
    if how in ("pynndescent", "projected") and V.shape[1] > ann_dim:
        # differences are linear in the rows: project the rows once (seeded Gaussian, Johnson-Lindenstrauss)
        R = rng.standard_normal((V.shape[1], ann_dim)).astype(np.float32) / np.sqrt(ann_dim)
        Vr = V @ R
    else:
        Vr = V
    U = Vr[pb] - Vr[pa]
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-30)
    if use_nnd:
        P, Q, S = _match_pynndescent(U, match_k, seed)
        used_backend = "pynndescent"
    elif R is not None:  # all matches in the projection, with a margin for its error; rescored below
        P, Q, S = _match_exhaustive(U, max(0.0, min_cosine - projection_margin), chunk=512)
        used_backend = "projected"
    else:  # exact: every match of every candidate pair above min_cosine (all pairs in exhaustive mode)
        P, Q, S = _match_exhaustive(U, min_cosine)
        used_backend = "exact"
    n_raw = int(P.size)
    # orient: S = -1 means pair q runs the other way
    a, b = pa[P], pb[P]
    c = np.where(S > 0, pa[Q], pb[Q])
    d = np.where(S > 0, pb[Q], pa[Q])
    distinct = (a != c) & (a != d) & (b != c) & (b != d)
    a, b, c, d = a[distinct], b[distinct], c[distinct], d[distinct]
    n_distinct = int(a.size)
    # canonical form, dedupe
    forms = np.stack([np.stack(f, 1) for f in ((a, b, c, d), (c, d, a, b), (b, a, d, c), (d, c, b, a))], 0)
    k1 = forms[:, :, 0] * n + forms[:, :, 1]  # lexicographic (k1, k2): no int64 overflow for large n
    k2 = forms[:, :, 2] * n + forms[:, :, 3]
    best = np.argmin(np.where(k1 == k1.min(0), k2, np.iinfo(np.int64).max), axis=0)
    quad = forms[best, np.arange(forms.shape[1])]
    quad = np.unique(quad, axis=0) if quad.size else quad.reshape(0, 4)
    a, b, c, d = (quad[:, i] for i in range(4))
    if R is not None:  # cheap prefilter with the projected geometry (margins for its error), then exact
        cos_r, l1r, l2r, rung_r = _quad_geometry(Vr, a, b, c, d)
        pre = (cos_r >= min_cosine - projection_margin) & (rung_r >= (min_rung - 0.1) * np.maximum(l1r, l2r))
        a, b, c, d = a[pre], b[pre], c[pre], d[pre]
    # exact rescoring in the full space
    gram = (V @ V.T) if n <= 4096 else None  # small sets: every dot product is a lookup
    cos, l1, l2, rung = _quad_geometry(V, a, b, c, d, gram)
    ratio = np.minimum(l1, l2) / np.maximum(np.maximum(l1, l2), 1e-30)
    # a near-duplicate a ~ c makes (a, x, c, y) "parallel" for any x, y: a triangle, not a crystal
    keep = (cos >= min_cosine) & (rung >= min_rung * np.maximum(l1, l2))
    a, b, c, d, cos, ratio, l1, l2 = (x[keep] for x in (a, b, c, d, cos, ratio, l1, l2))
    order = np.lexsort((-ratio, -cos))[:top]
    rows = []
    for r, i in enumerate(order, 1):
        rec = {"rank": r, "a": int(ids[a[i]]), "b": int(ids[b[i]]), "c": int(ids[c[i]]), "d": int(ids[d[i]]),
               "cosine": float(cos[i]), "length_ratio": float(ratio[i]),
               "kind": "parallelogram" if ratio[i] >= parallelogram_ratio else "trapezoid", "score": float(cos[i])}
        if labels:
            for key_, j in zip("abcd", (a[i], b[i], c[i], d[i])):
                rec[f"label_{key_}"] = labels.get(int(ids[j]))
        rows.append(rec)
    examples = []
    for i in order[:n_examples]:
        pts = V[[a[i], b[i], c[i], d[i]]].astype(np.float64)
        e1 = pts[1] - pts[0]
        e1 /= max(np.linalg.norm(e1), 1e-30)
        e2 = pts[2] - pts[0]
        e2 -= (e2 @ e1) * e1
        e2 /= max(np.linalg.norm(e2), 1e-30)
        rel = pts - pts[0]
        examples.append({"ids": [int(ids[j]) for j in (a[i], b[i], c[i], d[i])],
                         "xy": np.stack([rel @ e1, rel @ e2], 1).tolist(), "cosine": float(cos[i]),
                         "length_ratio": float(ratio[i])})
    params = {"mode": mode, "k": k, "match_k": match_k, "min_cosine": min_cosine,
              "parallelogram_ratio": parallelogram_ratio, "min_rung": min_rung, "top": top, "normalize": normalize,
              "remove_pcs": remove_pcs, "projection": None if projection is None else list(np.shape(projection)),
              "ann_dim": ann_dim if R is not None else None, "backend": used_backend, "seed": seed,
              "n_raw_matches": n_raw, "n_distinct": n_distinct}
    return CrystalResult(layer=layer, params=params, n_features=n, n_candidate_pairs=int(len(pairs)),
                         n_matches=int(keep.sum()), crystals=rows, examples=examples)


def crystal_null(vectors: np.ndarray, *, normalize: bool = True, seed: int = 0, **kw) -> CrystalResult:
    """The same search on a Gaussian cloud with the mean and covariance of ``vectors`` (after the
    same normalisation): how many matches a structureless cloud of that shape gives."""
    V = np.asarray(vectors, dtype=np.float64)
    if normalize:
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
    mu = V.mean(0)
    w, Q = np.linalg.eigh(np.cov(V, rowvar=False))
    G = resolve_rng(seed + 1).standard_normal(V.shape)
    Z = (mu + (G * np.sqrt(np.maximum(w, 0.0))) @ Q.T).astype(np.float32)
    return find_crystals(Z, normalize=normalize, seed=seed, **kw)


def planted_crystals(n: int = 2000, d: int = 256, n_crystals: int = 40, *, side: float = 0.6, noise: float = 0.02,
                     trapezoid_every: int = 4, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A random unit-vector cloud with planted crystals (for tests and benchmarks).

    Each crystal takes four rows: ``a``, ``c`` random, ``b = a + v``, ``d = c + s v`` (``s = 1``, or 2
    for every ``trapezoid_every``-th crystal), plus noise; ``|v| = side``.  Returns (rows, quadruples).
    """
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


def crystal_recall(result: CrystalResult, planted: Sequence[tuple[int, int, int, int]]) -> float:
    """Fraction of planted quadruples found (up to the equivalences of :func:`canonical_quadruple`)."""
    found = result.quadruples()
    return sum(canonical_quadruple(*q) in found for q in planted) / max(1, len(planted))


__all__ = ["DEFAULT_TEMPLATE", "CRYSTAL_COLUMNS", "word_vectors", "PairData", "task_words", "cap_pairs",
           "build_pair_data", "distractors", "fit_lda", "pc_removal_map", "analogy_accuracy", "evaluate_projections",
           "AtomResult", "analyze_pairs", "CrystalResult", "crystal_null", "canonical_quadruple", "find_crystals", "planted_crystals",
           "crystal_recall"]


# --------------------------------------------------------------------------------------------
# the whole job: model + tasks (+ SAE suite) -> per-layer results on disk (resumable)


def _layer_dir(out, layer: int, single: bool):
    from pathlib import Path

    return Path(out) if single else Path(out) / f"layer_{layer}"


def run_atoms(model, layers: Sequence[int], out, *, sae: str | None = "default", tasks: Sequence[str] | str | None = None,
              pair_files: Sequence[str] = (), template: str = DEFAULT_TEMPLATE, test_fraction: float = 0.3,
              max_pairs: int | None = None, sae_space: bool = False, max_quadruples: int = 500,
              n_components: Sequence[int] | None = None, remove_pcs: Sequence[int] = DEFAULT_REMOVE_PCS,
              crystal_kw: Mapping[str, Any] | None = None, seed: int = 0, progress=None) -> dict:
    """Atom-scale analysis of several layers; writes ``atoms.json``, ``crystals.csv`` and ``crystals.json``.

    One layer writes into ``out``; several write ``out/layer_L/`` each (finished layers are reused
    when rerun with the same parameters) plus a combined ``out/crystals.csv``.  ``sae=None`` or
    ``"none"`` skips the crystal search (``crystals.csv`` then holds only the header).
    Returns ``{layer: {"atoms": AtomResult, "atoms_sae": AtomResult | None, "crystals": CrystalResult | None,
    "dir": Path}}``.
    """
    import json
    from pathlib import Path

    from threadpoolctl import threadpool_limits

    from featuregeo.core.util import atomic_write_text
    from featuregeo.io.models import check_layers, load_model
    from featuregeo.io.pairs import load_tasks

    log = progress or (lambda msg: None)
    _check_template(template)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction: expected a number in (0, 1). Got {test_fraction!r} instead.")
    task_list = [cap_pairs(t, max_pairs, seed) for t in load_tasks(tasks, pair_files)]
    if isinstance(model, str):
        log(f"atoms: loading model {model!r}")
        model = load_model(model)
    layers = check_layers(model, layers)
    sae = None if sae in (None, "none") else sae
    if sae_space and sae is None:
        raise InputError("--sae-space: needs an SAE source; expected --sae SOURCE (not 'none')")
    out = Path(out)
    single = len(layers) == 1
    crystal_kw = dict(crystal_kw or {})
    stamp = json.dumps({"model": model.name, "sae": sae, "tasks": [t.describe() for t in task_list],
                        "template": template, "test_fraction": test_fraction, "max_pairs": max_pairs,
                        "sae_space": sae_space, "max_quadruples": max_quadruples,
                        "n_components": None if n_components is None else list(n_components),
                        "remove_pcs": list(remove_pcs), "crystal_kw": crystal_kw, "seed": seed},
                       sort_keys=True, default=str)
    results: dict = {}
    todo = []
    for L in layers:
        d = _layer_dir(out, L, single)
        if (d / ".atoms_params").is_file() and (d / ".atoms_params").read_text() == stamp and (d / "atoms.json").is_file():
            log(f"atoms layer {L}: reused {d}")
            cr = CrystalResult.load(d / "crystals.json") if (d / "crystals.json").is_file() else None
            sp = AtomResult.load(d / "atoms_sae.json") if (d / "atoms_sae.json").is_file() else None
            results[L] = {"atoms": AtomResult.load(d / "atoms.json"), "atoms_sae": sp, "crystals": cr, "dir": d}
        else:
            todo.append(L)
    if todo:
        suite = None
        clouds: dict = {}
        saes: dict = {}
        if sae is not None:
            from featuregeo.io import open_suite

            suite = open_suite(sae, todo)
            for L in todo:
                clouds[L] = suite.load(L)
                if sae_space:
                    from featuregeo.io.saelens import load_sae

                    saes[L] = load_sae(clouds[L])
        words = task_words(task_list)
        log(f"atoms: {len(words)} words of {len(task_list)} tasks through {model.name!r}, layers {todo}")
        vecs, n_tok = word_vectors(model, words, todo, template=template)
        svecs = word_vectors(model, words, todo, template=template, saes=saes)[0] if saes else {}
        params = {"model": model.name, "template": template, "test_fraction": test_fraction,
                  "max_pairs": max_pairs, "sae": sae}
        for L in todo:
            with threadpool_limits(1, user_api="blas"):  # small matrices: threaded BLAS only spins (10-20x slower)
                res, sres, cres = _analyze_layer(L, task_list, words, vecs, svecs, n_tok, clouds, out, single, seed,
                                                 test_fraction, n_components, remove_pcs, max_quadruples, params,
                                                 crystal_kw, sae)
            if sres is not None:
                sres.crystals = res.crystals
                sres.save(_layer_dir(out, L, single) / "atoms_sae.json")
            d = _layer_dir(out, L, single)
            res.save(d / "atoms.json")
            atomic_write_text(d / ".atoms_params", stamp)
            log(f"atoms layer {L}: wrote {d}")
            results[L] = {"atoms": res, "atoms_sae": sres, "crystals": cres, "dir": d}
    if not single:
        lines = [",".join(CRYSTAL_COLUMNS)]
        for L in layers:
            lines += (results[L]["dir"] / "crystals.csv").read_text().splitlines()[1:]
        atomic_write_text(out / "crystals.csv", "\n".join(lines) + "\n")
    return {L: results[L] for L in layers}


def _analyze_layer(L, task_list, words, vecs, svecs, n_tok, clouds, out, single, seed, test_fraction, n_components,
                   remove_pcs, max_quadruples, params, crystal_kw, sae):
    """One layer of :func:`run_atoms`: pair analyses (residual and SAE space) and the crystal search."""
    from featuregeo.core.util import atomic_write_text

    d = _layer_dir(out, L, single)
    data = build_pair_data(task_list, words, vecs[L], n_tok, test_fraction=test_fraction, seed=seed)
    kw = dict(layer=L, n_components=n_components, remove_pcs=remove_pcs, max_quadruples=max_quadruples,
              seed=seed, params=params)
    res = analyze_pairs(data, space="residual", **kw)
    sres = None
    if L in svecs:
        sdata = build_pair_data(task_list, words, svecs[L], n_tok, test_fraction=test_fraction, seed=seed)
        sres = analyze_pairs(sdata, space="sae", **kw)
    cres = None
    if L in clouds:
        cl = clouds[L]
        cres = find_crystals(cl.vectors, feature_ids=cl.feature_ids, layer=L, seed=seed, **crystal_kw)
        null = crystal_null(cl.vectors, seed=seed, top=1, **{k: v for k, v in crystal_kw.items() if k != "top"})
        res.crystals = {"source": sae, "n_features": cres.n_features, "n_candidate_pairs": cres.n_candidate_pairs,
                        "n_matches": cres.n_matches, "n_reported": len(cres.crystals),
                        "n_parallelograms": sum(r["kind"] == "parallelogram" for r in cres.crystals),
                        "params": cres.params, "null_n_matches": null.n_matches,
                        "null_top_cosine": null.crystals[0]["cosine"] if null.crystals else None,
                        "null": "same search on a Gaussian cloud with the rows' mean and covariance"}
        cres.save(d / "crystals.json")
        cres.write_csv(d / "crystals.csv")
    else:
        res.crystals = {"skipped": "no SAE source (--sae none)"}
        atomic_write_text(d / "crystals.csv", ",".join(CRYSTAL_COLUMNS) + "\n")
    return res, sres, cres


__all__ += ["run_atoms"]
