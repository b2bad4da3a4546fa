"""Word vectors and word-pair data: the first two stages of the atom-scale analysis.

1. :func:`word_vectors` reads each word, written into a template (default ``" {word}"``), at the
   residual stream of several layers, at the template's last token (multi-token words are handled
   by that rule and counted).  :func:`sae_reconstruct` passes such vectors through an SAE.
2. :func:`build_pair_data` indexes the pairs of the tasks into the word table (one difference
   vector ``b - a`` per pair) and splits them by pair into train and test
   (:func:`featuregeo.io.pairs.split_pairs`).

Only :func:`word_vectors` and :func:`sae_reconstruct` touch torch (through
:mod:`featuregeo.io.models` and the SAE object); everything else works on numpy arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.io.pairs import PairTask, pair_fraction, split_pairs

DEFAULT_TEMPLATE = " {word}"
#: tasks with fewer pairs (after duplicates are removed) are skipped
MIN_PAIRS = 3


def check_template(template: Any, name: str = "template") -> None:
    """Raise an :class:`InputError` unless ``template`` is a string containing ``{word}`` and nothing
    else in braces (so ``template.format(word=...)`` cannot fail)."""
    ok = isinstance(template, str) and "{word}" in template
    if ok:
        try:
            template.format(word="x")
        except (KeyError, IndexError, ValueError):
            ok = False
    if not ok:
        raise InputError(f"{name}: expected a string containing '{{word}}', e.g. ' {{word}}'. Got {template!r} instead.")


def word_vectors(model, words: Sequence[str], layers: int | Sequence[int], *, template: str = DEFAULT_TEMPLATE,
                 batch_size: int = 64) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Last-token residual vectors of words, several layers from one forward pass per batch.

    Parameters
    ----------
    model : LoadedModel
        From :func:`featuregeo.io.models.load_model`.
    words : sequence of str
    layers : int or sequence of int
        Out of range raises :class:`InputError` naming the valid range.
    template : str, default=" {word}"
        Each word is read as ``template.format(word=word)`` after BOS; the vector is the residual
        stream at the template's last token.
    batch_size : int, default=64

    Returns
    -------
    vectors : dict of int to ndarray
        Layer -> float32 array ``[n_words, d_model]``.
    n_tokens : ndarray
        Int array ``[n_words]``: tokens of the filled template (without BOS).

    Examples
    --------
    >>> vecs, n_tok = word_vectors(model, ["king", "queen"], [3, 9])   # doctest: +SKIP
    """
    from featuregeo.io.models import check_layers, iter_residual_stream

    check_template(template)
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
    return out, n_tokens


def sae_reconstruct(sae, X: np.ndarray) -> np.ndarray:
    """``decode(encode(x))`` of each row of ``X`` through a sae-lens SAE, as float32."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(X), dtype=sae.W_dec.dtype)
        return sae.decode(sae.encode(x)).float().numpy()


# --------------------------------------------------------------------------------------------
# pair data


@dataclass
class TaskSummary:
    """One task as used at one layer.

    Attributes
    ----------
    name, source : str
        The task and where its pairs came from.
    n_pairs, n_duplicates : int
        Pairs kept; duplicate and self-pairs removed.
    notes : list of str
        E.g. ``"capped at 24 of 212 pairs"``.
    n_train, n_test : int
        Pairs on each side of the split.
    n_words, n_multi_token_words : int
        Distinct words, and those whose filled template is more than one token.
    """

    name: str
    source: str
    n_pairs: int
    n_duplicates: int = 0
    notes: list[str] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    n_words: int = 0
    n_multi_token_words: int = 0


@dataclass
class SkippedTask:
    """A task left out, with the reason (e.g. fewer than :data:`MIN_PAIRS` pairs)."""

    task: str
    reason: str
    source: str


@dataclass
class PairData:
    """Word vectors and the pairs over them (an intermediate; not saved).

    Attributes
    ----------
    words : list of str
    X : ndarray
        ``[n_words, d]`` word vectors.
    a, b : ndarray
        Int arrays ``[n_pairs]``: word indices of each pair ``(a, b)``.
    task : ndarray
        Int array ``[n_pairs]``: index into ``task_names``.
    test : ndarray
        Bool array ``[n_pairs]``: held-out pairs.
    n_tokens : ndarray
        Int array ``[n_words]``.
    task_names : list of str
    tasks : list of TaskSummary
    skipped : list of SkippedTask
    """

    words: list[str]
    X: np.ndarray
    a: np.ndarray
    b: np.ndarray
    task: np.ndarray
    test: np.ndarray
    n_tokens: np.ndarray
    task_names: list[str]
    tasks: list[TaskSummary] = field(default_factory=list)
    skipped: list[SkippedTask] = field(default_factory=list)

    @property
    def diffs(self) -> np.ndarray:
        """Difference vectors ``X[b] - X[a]``, one per pair."""
        return self.X[self.b] - self.X[self.a]

    @property
    def d_tokens(self) -> np.ndarray:
        """Change in token count of each pair."""
        return (self.n_tokens[self.b] - self.n_tokens[self.a]).astype(np.float64)

    @property
    def d_chars(self) -> np.ndarray:
        """Change in character length of each pair."""
        lens = np.array([len(w) for w in self.words], dtype=np.float64)
        return lens[self.b] - lens[self.a]

    def with_vectors(self, X: np.ndarray) -> PairData:
        """The same pairs and split over other word vectors (e.g. SAE reconstructions)."""
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] != len(self.words):
            raise InputError(f"X: expected [{len(self.words)}, d] word vectors. Got shape {X.shape} instead.")
        return dataclasses.replace(self, X=X)


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

    Parameters
    ----------
    tasks : sequence of PairTask
    words : sequence of str
        The rows of ``X``; every word of every task must be here.
    X : ndarray
        ``[n_words, d]`` finite word vectors.
    n_tokens : ndarray
        ``[n_words]`` token counts (for the distractor correlations).
    test_fraction : float, default=0.3
    seed : int, default=0
        Seed of the pair hash deciding each pair's side.
    min_pairs : int, default=MIN_PAIRS
        Tasks with fewer pairs are skipped, with a :class:`SkippedTask` note.

    Returns
    -------
    PairData
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
            skipped.append(SkippedTask(task=t.name, source=t.source,
                                       reason=f"{t.n_pairs} pair(s) after removing {t.n_duplicates} duplicate(s); "
                                              f"at least {min_pairs} needed"))
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
        recs.append(TaskSummary(name=t.name, source=t.source, n_pairs=t.n_pairs, n_duplicates=t.n_duplicates,
                                notes=list(t.notes), n_train=len(train), n_test=len(test), n_words=len(tw),
                                n_multi_token_words=int(sum(n_tokens[index[w]] > 1 for w in tw))))
    return PairData(words=list(words), X=X, a=np.array(a, dtype=np.int64), b=np.array(b, dtype=np.int64),
                    task=np.array(tk, dtype=np.int64), test=np.array(te, dtype=bool),
                    n_tokens=np.asarray(n_tokens, dtype=np.int64), task_names=names, tasks=recs, skipped=skipped)


__all__ = [
    "DEFAULT_TEMPLATE",
    "MIN_PAIRS",
    "PairData",
    "SkippedTask",
    "TaskSummary",
    "build_pair_data",
    "cap_pairs",
    "check_template",
    "sae_reconstruct",
    "task_words",
    "word_vectors",
]
