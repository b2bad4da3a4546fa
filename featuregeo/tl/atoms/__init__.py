"""Atom scale: function vectors of word pairs, distractor directions, LDA scored on held-out pairs,
and a search for crystals (parallelograms and trapezoids) among SAE decoder rows.

The stages (Li et al. 2025, section "atom scale", with held-out scoring added) live in
:mod:`~featuregeo.tl.atoms.vectors` (word vectors, :class:`PairData`),
:mod:`~featuregeo.tl.atoms.projections` (distractors, LDA, PC removal, analogy accuracy) and
:mod:`~featuregeo.tl.atoms.crystals` (the crystal search, its null, planted crystals); this module
holds the contract: :class:`AtomsParams`, :func:`analyze` and :class:`AtomsResult` (one
:class:`AtomsLayer` per layer).

Examples
--------
>>> from featuregeo.io.models import load_model                      # doctest: +SKIP
>>> from featuregeo.io import open_suite
>>> from featuregeo.tl import atoms
>>> params = atoms.AtomsParams(tasks=("male-female", "comparative", "superlative"), max_pairs=24)
>>> res = atoms.analyze(load_model("default"), open_suite("default"), params, layers=[3, 9])
>>> res.layers[0].best("lda").analogy_accuracy
>>> res.layers[0].crystals.rows()[:3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, Result, check_float, check_int
from featuregeo.core.util import fingerprint, say
from featuregeo.io.pairs import BUILTIN_TASKS, PairTask, load_tasks
from featuregeo.tl.atoms.crystals import (
    CRYSTAL_COLUMNS,
    CrystalExample,
    CrystalParams,
    CrystalResult,
    Quadruples,
    canonical_quadruple,
    crystal_null,
    crystal_recall,
    find_crystals,
    planted_crystals,
)
from featuregeo.tl.atoms.projections import (
    DEFAULT_REMOVE_PCS,
    Distractors,
    Embedding,
    MethodScore,
    SpaceScores,
    analogy_accuracy,
    analyze_pairs,
    best_score,
    distractors,
    evaluate_projections,
    fit_lda,
    pc_removal_map,
)
from featuregeo.tl.atoms.vectors import (
    DEFAULT_TEMPLATE,
    MIN_PAIRS,
    PairData,
    SkippedTask,
    TaskSummary,
    build_pair_data,
    cap_pairs,
    check_template,
    sae_reconstruct,
    task_words,
    word_vectors,
)

NULL_DESCRIPTION = "the same search on a Gaussian cloud with the rows' mean and covariance"


# --------------------------------------------------------------------------------------------
# parameters


def _as_tuple(value: Any, *, split: bool = False) -> Any:
    """Lists become tuples (and a comma-separated string a tuple of names when ``split``)."""
    if isinstance(value, str) and split:
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, list):
        return tuple(value)
    return value


@dataclass(frozen=True)
class AtomsParams(Params):
    """Parameters of the atom-scale analysis.

    Parameters
    ----------
    tasks : tuple of str or None, default=None
        Built-in tasks (:data:`featuregeo.io.pairs.BUILTIN_TASKS`); None for all, ``()`` for none
        (then ``pair_files`` must give some).  A comma-separated string is accepted.
    pair_files : tuple of str, default=()
        Extra tasks: CSV ``input,output[,task]`` or JSON ``[{"input": .., "output": ..}]`` files.
    template : str, default=" {word}"
        Prompt template; each word's vector is the residual stream at its last token.
    max_pairs : int or None, default=None
        Cap on pairs per task (chosen by pair hash), at least :data:`MIN_PAIRS`.
    test_fraction : float, default=0.3
        Fraction of each task's pairs held out (by pair hash), in (0, 1).
    sae_space : bool, default=False
        Also analyse the word vectors passed through the SAE (``decode(encode(x))``); needs a suite
        from a sae-lens source.
    n_components : tuple of int or None, default=None
        LDA components to score (each in 1..n_tasks-1); default ``2 .. n_tasks-1``.
    remove_pcs : tuple of int, default=(1, 2, 4, 8)
        PC-removal baselines: numbers of top principal components projected out.
    shrinkage : float, "auto" or None, default="auto"
        LDA covariance shrinkage (None: no shrinkage, SVD solver).
    max_quadruples : int, default=500
        Analogy quadruples scored per task (a seeded sample).
    crystal : CrystalParams
        The crystal search among the SAE's decoder rows (run when a suite is given).
    crystal_null : bool, default=True
        Also run the search on a Gaussian cloud of the rows' mean and covariance.
    batch_size : int, default=64
        Words per forward pass.
    seed : int, default=0
        Seeds the train/test split, the pair cap and the quadruple sample (the crystal search has
        its own ``crystal.seed``).
    """

    tasks: tuple[str, ...] | None = None
    pair_files: tuple[str, ...] = ()
    template: str = DEFAULT_TEMPLATE
    max_pairs: int | None = None
    test_fraction: float = 0.3
    sae_space: bool = False
    n_components: tuple[int, ...] | None = None
    remove_pcs: tuple[int, ...] = DEFAULT_REMOVE_PCS
    shrinkage: float | str | None = "auto"
    max_quadruples: int = 500
    crystal: CrystalParams = field(default_factory=CrystalParams)
    crystal_null: bool = True
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        pair_files = self.pair_files
        if isinstance(pair_files, (list, tuple)):
            pair_files = tuple(str(f) for f in pair_files)
        object.__setattr__(self, "pair_files", pair_files)
        object.__setattr__(self, "tasks", _as_tuple(self.tasks, split=True))
        object.__setattr__(self, "n_components", _as_tuple(self.n_components))
        object.__setattr__(self, "remove_pcs", _as_tuple(self.remove_pcs))

    def validate(self) -> AtomsParams:
        if self.tasks is not None:
            if not isinstance(self.tasks, tuple) or not all(isinstance(t, str) for t in self.tasks):
                raise InputError(f"tasks: expected task names like ('male-female', 'comparative'). Got {self.tasks!r} instead.")
            unknown = [t for t in self.tasks if t not in BUILTIN_TASKS]
            if unknown:
                raise InputError(f"tasks: unknown task(s) {unknown}; valid names are {sorted(BUILTIN_TASKS)}")
        if not isinstance(self.pair_files, tuple):
            raise InputError(f"pair_files: expected a list of file paths. Got {self.pair_files!r} instead.")
        if self.tasks == () and not self.pair_files:
            raise InputError("tasks: no tasks selected; expected built-in task names and/or pair files")
        check_template(self.template)
        check_int("max_pairs", self.max_pairs, minimum=MIN_PAIRS, allow_none=True)
        check_float("test_fraction", self.test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
        for name in ("sae_space", "crystal_null"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}: expected True or False. Got {getattr(self, name)!r} instead.")
        for name, values in (("n_components", self.n_components), ("remove_pcs", self.remove_pcs)):
            if values is None and name == "n_components":
                continue
            if not isinstance(values, tuple):
                raise InputError(f"{name}: expected a list of integers >= 1. Got {values!r} instead.")
            for v in values:
                check_int(name, v, minimum=1)
        if not (self.shrinkage is None or self.shrinkage == "auto"):
            check_float("shrinkage", self.shrinkage, low=0.0, high=1.0)
        check_int("max_quadruples", self.max_quadruples, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if not isinstance(self.crystal, CrystalParams):
            raise InputError(f"crystal: expected CrystalParams. Got {type(self.crystal).__name__} instead.")
        self.crystal.validate()
        return self


def load_pair_tasks(params: AtomsParams) -> list[PairTask]:
    """The tasks ``params`` selects (built-in and from pair files), capped at ``max_pairs``.

    Reads the pair files, so it is also the check that they are usable (the pipeline calls it before
    loading a model).
    """
    return [cap_pairs(t, params.max_pairs, params.seed) for t in load_tasks(params.tasks, params.pair_files)]


def pair_set_fingerprint(tasks: Sequence[PairTask]) -> str:
    """A fingerprint of the task names and their pairs (the content of the pair files)."""
    return fingerprint([(t.name, [list(p) for p in t.pairs]) for t in tasks])


# --------------------------------------------------------------------------------------------
# results


@dataclass
class CrystalNull:
    """The crystal search on a structureless cloud of the same shape.

    Attributes
    ----------
    n_matches : int
        Quadruples passing the same thresholds.
    top_cosine : float or None
        The best cosine found (None when there is none).
    description : str
    """

    n_matches: int
    top_cosine: float | None = None
    description: str = NULL_DESCRIPTION


@dataclass
class AtomsLayer(Result):
    """Atom-scale analysis of one layer.

    Attributes
    ----------
    layer : int
    n_pairs, n_test : int
        Pairs used, and those held out.
    task_names : list of str
        Tasks used (the task index of :attr:`Embedding.task`).
    tasks : list of TaskSummary
    skipped : list of SkippedTask
    distractors : Distractors
        PCA of all residual difference vectors vs. length changes.
    methods : list of MethodScore
        Held-out scores of the residual space: raw, LDA per ``n_components``, PC removal.
    embedding : Embedding
        2-D views of the held-out differences.
    sae_space : SpaceScores or None
        The same analysis of the word vectors passed through the SAE (``sae_space=True``).
    crystals : CrystalResult or None
        The crystal search among the layer's SAE decoder rows (None without a suite).
    crystal_null : CrystalNull or None
    """

    kind = "atoms_layer"
    layer: int
    n_pairs: int
    n_test: int
    task_names: list[str]
    tasks: list[TaskSummary]
    skipped: list[SkippedTask]
    distractors: Distractors
    methods: list[MethodScore]
    embedding: Embedding
    sae_space: SpaceScores | None = None
    crystals: CrystalResult | None = None
    crystal_null: CrystalNull | None = None

    def best(self, method: str, metric: str = "analogy_accuracy") -> MethodScore | None:
        """The residual-space record of ``method`` chosen on the validation split of the train pairs
        (see :func:`~featuregeo.tl.atoms.projections.best_score`; None if none)."""
        return best_score(self.methods, method, metric)

    def rows(self) -> list[dict[str, Any]]:
        """One record per (space, method, n_components) with the held-out scores."""
        spaces = [("residual", self.methods)] + ([("sae", self.sae_space.methods)] if self.sae_space else [])
        return [{"layer": self.layer, "space": space, "method": m.method, "n_components": m.n_components,
                 "silhouette": m.silhouette, "task_accuracy": m.task_accuracy, "analogy_accuracy": m.analogy_accuracy,
                 "n_quadruples": m.n_quadruples, "pc1_r_tokens": m.pc1_r_tokens, "pc1_r_chars": m.pc1_r_chars,
                 "analogy_accuracy_all": m.analogy_accuracy_all, "validation_accuracy": m.validation_accuracy,
                 "chosen": m.chosen}
                for space, methods in spaces for m in methods]


@dataclass
class AtomsResult(Result):
    """Atom-scale analysis of several layers of one model (and its SAEs).

    Attributes
    ----------
    params : AtomsParams
    model : str
        The model's name.
    sae : str or None
        The suite's name (None: no crystal search).
    layers : list of AtomsLayer
        In layer order.
    """

    kind = "atoms"
    params: AtomsParams
    model: str
    sae: str | None
    layers: list[AtomsLayer]

    def layer(self, layer: int) -> AtomsLayer:
        """The record of one layer."""
        for rec in self.layers:
            if rec.layer == layer:
                return rec
        raise InputError(f"layer: {layer} is not in this atoms result; available layers are "
                         f"{[r.layer for r in self.layers]}")

    def rows(self) -> list[dict[str, Any]]:
        """Method scores of every layer (see :meth:`AtomsLayer.rows`)."""
        return [r for rec in self.layers for r in rec.rows()]

    def crystal_rows(self) -> list[dict[str, Any]]:
        """The crystals of every layer as :data:`CRYSTAL_COLUMNS` records (``crystals.csv``)."""
        return [r for rec in self.layers if rec.crystals is not None for r in rec.crystals.rows()]


# --------------------------------------------------------------------------------------------
# analysis


def _check_inputs(model, suite: Suite | FeatureCloud | None, params: AtomsParams, layers) -> tuple[list[int], Any]:
    from featuregeo.io.models import check_layers

    if not (hasattr(model, "n_layers") and hasattr(model, "tokenizer")):
        raise InputError(f"model: expected a LoadedModel (featuregeo.io.models.load_model). Got {type(model).__name__} "
                         "instead.")
    if layers is None:
        raise InputError("layers: expected explicit layers like [3, 9, 15]. Got None instead.")
    layers = check_layers(model, layers)
    if isinstance(suite, FeatureCloud):
        if len(layers) != 1 or (suite.layer is not None and suite.layer != layers[0]):
            raise InputError(f"suite: one FeatureCloud (layer {suite.layer}) serves one layer; expected layers "
                             f"[{suite.layer}] or a Suite. Got layers {layers} instead.")
        suite = Suite(layers, lambda _L, c=suite: c, name=suite.provenance.source)
    if suite is not None:
        missing = [L for L in layers if L not in suite]
        if missing:
            raise InputError(f"layers: {missing} are not in the SAE suite {suite.name}; available layers are "
                             f"{suite.layers}")
    if params.sae_space and suite is None:
        raise InputError("sae_space: needs an SAE suite; expected a suite from a sae-lens source (not --sae none)")
    return layers, suite


def _analyze_layer(L: int, data: PairData, cloud: FeatureCloud | None, params: AtomsParams, progress) -> AtomsLayer:
    """One layer: pair analyses (residual and SAE space) and the crystal search."""
    from featuregeo.core.util import blas_one_thread

    kw = dict(n_components=params.n_components, remove_pcs=params.remove_pcs, shrinkage=params.shrinkage,
              max_quadruples=params.max_quadruples, seed=params.seed, key=L)
    with blas_one_thread("blas"):  # small matrices: threaded BLAS only spins (10-20x slower)
        res = analyze_pairs(data, space="residual", **kw)
    sae_scores = None
    if params.sae_space and cloud is not None:
        from featuregeo.io.saelens import load_sae

        sdata = data.with_vectors(sae_reconstruct(load_sae(cloud), data.X))
        with blas_one_thread("blas"):
            sae_scores = analyze_pairs(sdata, space="sae", **kw)
    crystals = null = None
    if cloud is not None:
        say(progress, f"atoms layer {L}: crystal search among {cloud.n_features} decoder rows")
        crystals = find_crystals(cloud.vectors, params.crystal, feature_ids=cloud.feature_ids, progress=progress)
        crystals.layer = L
        if params.crystal_null:
            nres = crystal_null(cloud.vectors, params.crystal.replace(max_results=1, n_examples=0))
            null = CrystalNull(n_matches=nres.n_matches,
                               top_cosine=float(nres.quadruples.cosine[0]) if len(nres) else None)
    return AtomsLayer(layer=L, n_pairs=int(data.a.size), n_test=int(data.test.sum()), task_names=list(data.task_names),
                      tasks=data.tasks, skipped=data.skipped, distractors=res.distractors, methods=res.methods,
                      embedding=res.embedding, sae_space=sae_scores, crystals=crystals, crystal_null=null)


def analyze(model, suite: Suite | FeatureCloud | None, params: AtomsParams | None = None, *, layers: Sequence[int],
            checkpoint=None, progress=None) -> AtomsResult:
    """Atom-scale analysis of ``layers`` of a model, with crystals among the suite's decoder rows.

    Parameters
    ----------
    model : LoadedModel
        From :func:`featuregeo.io.models.load_model`.
    suite : Suite, FeatureCloud or None
        The SAEs of those layers (:func:`featuregeo.io.open_suite`); None skips the crystal search.
    params : AtomsParams, optional
        Default ``AtomsParams()``; validated first.
    layers : sequence of int
        Model layers (and suite layers) to analyse.
    checkpoint : Checkpoint, optional
        One unit per layer (``layer_L``), fingerprinted by the params, the model name and dtype, the
        layer's SAE (:meth:`FeatureCloud.fingerprint`) and the pair set; a rerun reuses finished layers.
    progress : callable, optional
        Called with one line of text per stage.

    Returns
    -------
    AtomsResult
        One :class:`AtomsLayer` per layer, in layer order.
    """
    params = (params or AtomsParams()).validate()
    tasks = load_pair_tasks(params)
    layers, suite = _check_inputs(model, suite, params, layers)
    words = task_words(tasks)
    base = fingerprint("atoms_layer", params.fingerprint(), model.name, getattr(model, "dtype", None),
                       pair_set_fingerprint(tasks))
    fps = {L: fingerprint(base, L, suite.load(L).fingerprint() if suite is not None else None) for L in layers}
    todo = [L for L in layers if checkpoint is None or not checkpoint.has(f"layer_{L}", fps[L])]
    cache: dict[int, np.ndarray] = {}
    n_tok: list[np.ndarray] = []

    def vectors(L: int) -> np.ndarray:
        if L not in cache:  # one forward pass for every layer still to do
            need = [x for x in todo if x not in cache] if L in todo else [L]
            say(progress, f"atoms: {len(words)} words of {len(tasks)} tasks through {model.name!r}, layers {need}")
            vecs, tok = word_vectors(model, words, need, template=params.template, batch_size=params.batch_size)
            cache.update(vecs)
            n_tok[:] = [tok]
        return cache.pop(L)

    def compute(L: int) -> AtomsLayer:
        X = vectors(L)
        data = build_pair_data(tasks, words, X, n_tok[0], test_fraction=params.test_fraction, seed=params.seed)
        rec = _analyze_layer(L, data, suite.load(L) if suite is not None else None, params, progress)
        say(progress, f"atoms layer {L}: done")
        return rec

    records = []
    for L in layers:
        if checkpoint is None:
            records.append(compute(L))
        else:
            records.append(checkpoint.result(f"layer_{L}", fps[L], lambda L=L: compute(L), AtomsLayer))
    return AtomsResult(params=params, model=model.name, sae=None if suite is None else suite.name, layers=records)


__all__ = [
    "AtomsParams", "AtomsLayer", "AtomsResult", "CrystalNull", "analyze", "load_pair_tasks", "pair_set_fingerprint",
    # vectors
    "DEFAULT_TEMPLATE", "MIN_PAIRS", "PairData", "TaskSummary", "SkippedTask", "word_vectors", "sae_reconstruct",
    "task_words", "cap_pairs", "build_pair_data", "check_template",
    # projections
    "DEFAULT_REMOVE_PCS", "Distractors", "MethodScore", "Embedding", "SpaceScores", "distractors", "fit_lda",
    "pc_removal_map", "analogy_accuracy", "evaluate_projections", "analyze_pairs",
    # crystals
    "CRYSTAL_COLUMNS", "CrystalParams", "CrystalResult", "Quadruples", "CrystalExample", "canonical_quadruple",
    "find_crystals", "crystal_null", "planted_crystals", "crystal_recall",
]
