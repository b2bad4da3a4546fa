"""Cross-layer structure of a model: representation similarity, StructLens trees, SAE geometry across
layers, and a pruning check of which similarity measure finds redundant blocks.

::

    from featuregeo.tl import layers
    params = layers.LayersParams.fast()                     # or LayersParams(measures=("cka",), ...)
    result = layers.analyze(model, suite, params, checkpoint=None, progress=print)
    result.matrix("cka"); result.redundancy["cka"][0].block; result.pruning.baseline

* Representations: ``rep 0`` is the input of block 0 (the scaled token embeddings), ``rep L+1`` the
  output of block ``L`` (the residual stream), on held-out blocks of text (BOS dropped), read with
  :func:`featuregeo.io.hooks.read_representations`.
* :mod:`~featuregeo.tl.layers.similarity` — mean token cosine, linear CKA (Kornblith et al. 2019),
  tree matrices, the redundancy ranking (block ``L`` scores ``sim(rep L, rep L+1)``).
* :mod:`~featuregeo.tl.layers.trees` — StructLens trees (arXiv 2603.03328), Chu-Liu/Edmonds, UAS,
  Zhang-Shasha tree edit distance.
* :mod:`~featuregeo.tl.layers.matching` — galaxy slope per SAE layer and feature matching between
  adjacent layers, with a random-rotation null.
* :mod:`~featuregeo.tl.layers.pruning` — held-out loss after dropping the most redundant blocks,
  against random drops (hooks in :mod:`featuregeo.io.hooks`).

Resumable units (with a :class:`~featuregeo.core.checkpoint.Checkpoint`): ``activations``,
``matrix_<measure>``, ``sae_slope_<L>``, ``sae_match_<a>_<b>`` and ``loss_<blocks>``; each is
fingerprinted by everything that determines it (model identity, the held-out token rows — which
encode n_blocks, block_len, seed and corpus —, the measure, the clouds' fingerprints, thresholds,
null options and seed, the dropped blocks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import Suite
from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.core.util import fingerprint, say
from featuregeo.io.hooks import check_hookable, heldout_loss, read_representations, skip_blocks
from featuregeo.io.models import LoadedModel
from featuregeo.tl.layers.heldout import HeldoutRows, heldout_rows, model_fingerprint
from featuregeo.tl.layers.matching import (DEFAULT_THRESHOLDS, FeatureMatch, MatchPair, SaeGeometry, SaeLayer,
                                           match_features, random_rotation, sae_geometry)
from featuregeo.tl.layers.params import LayersParams
from featuregeo.tl.layers.pruning import PruningCheck, PruningRow, RandomDropSummary, pruning_check
from featuregeo.tl.layers.similarity import (MEASURES, UAS_SKIP, RedundantBlock, check_measures, cka_matrix,
                                             debiased_cka_matrix, gaussian_cka_baseline,
                                             cosine_matrix, linear_cka, redundancy, similarity_matrices,
                                             tree_matrices)
from featuregeo.tl.layers.trees import (maximum_spanning_arborescence, sentence_trees, structlens_scores,
                                        structlens_tree, tree_edit_distance, uas)

ACT_BATCH = 8  # rows per forward pass when reading representations
LOSS_BATCH = 4  # rows per forward pass of the pruning loss

__all__ = [
    "LayersParams", "LayersResult", "analyze", "check_inputs", "MEASURES", "DEFAULT_THRESHOLDS",
    "RedundantBlock", "FeatureMatch", "MatchPair", "SaeLayer", "SaeGeometry", "PruningRow", "RandomDropSummary",
    "PruningCheck", "HeldoutRows", "heldout_rows", "model_fingerprint", "check_measures", "linear_cka",
    "cka_matrix", "debiased_cka_matrix", "gaussian_cka_baseline", "cosine_matrix", "tree_matrices", "similarity_matrices", "redundancy", "match_features",
    "random_rotation", "sae_geometry", "pruning_check", "maximum_spanning_arborescence", "structlens_scores",
    "structlens_tree", "sentence_trees", "tree_edit_distance", "uas", "read_representations", "skip_blocks",
    "heldout_loss",
]


@dataclass
class LayersResult(Result):
    """Cross-layer comparison of one model (``layers.json`` + ``layers.npz`` + ``layers.csv``).

    Attributes
    ----------
    params : LayersParams
    model : str
        The model's name.
    labels : list of str
        Representation labels: ``"embed"`` (input of block 0), then ``"0" .. "n-1"`` (block outputs).
    matrices : dict str -> ndarray (R, R)
        Similarity over representations per measure (``cosine``, ``cka``, ``uas``, ``ted``; with
        ``ted`` also ``ted_distance``).
    redundancy : dict str -> list of RedundantBlock
        Per measure, blocks ranked most redundant first (score = sim(input, output) of the block).
    sae : SaeGeometry or None
        Slopes per SAE layer and the matching table (None without an SAE suite).
    pruning : PruningCheck or None
        None when ``prune_max = 0``.
    data : HeldoutRows
        The held-out token rows that were read.
    seconds : float
        Wall time (not compared).
    cka_baseline, cka_debiased_baseline : float or None
        Linear and debiased CKA between two independent isotropic Gaussians with as many tokens and
        dimensions as the data (what "no shared structure" scores; None without ``"cka"``).  With
        ``"cka"``, ``matrices["cka_debiased"]`` is filled too.
    cka_debiased_redundancy : list of RedundantBlock or None
        Blocks ranked by debiased CKA of their input and output (``redundancy`` keeps one entry per
        requested measure).
    """

    kind = "layers"
    params: LayersParams = field(default_factory=LayersParams)
    model: str = ""
    labels: list[str] = field(default_factory=list)
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    redundancy: dict[str, list[RedundantBlock]] = field(default_factory=dict)
    sae: SaeGeometry | None = None
    pruning: PruningCheck | None = None
    data: HeldoutRows = field(default_factory=HeldoutRows)
    seconds: float = field(default=0.0, compare=False)
    cka_baseline: float | None = None
    cka_debiased_baseline: float | None = None
    cka_debiased_redundancy: list[RedundantBlock] | None = None

    def matrix(self, measure: str) -> np.ndarray:
        """The similarity matrix of ``measure`` (float64); InputError naming the available ones."""
        if measure not in self.matrices:
            raise InputError(f"measure: expected one of {sorted(self.matrices)}. Got {measure!r} instead.")
        return np.asarray(self.matrices[measure], dtype=np.float64)

    def most_redundant(self, measure: str, n: int = 1) -> list[int]:
        """The ``n`` most redundant blocks under ``measure``."""
        if measure not in self.redundancy:
            raise InputError(f"measure: expected one of {sorted(self.redundancy)}. Got {measure!r} instead.")
        return [r.block for r in self.redundancy[measure][:n]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per block: for each measure its redundancy score and rank (1 = most redundant)."""
        blocks = sorted({r.block for red in self.redundancy.values() for r in red})
        out = []
        for b in blocks:
            row: dict[str, Any] = {"block": b}
            for m, red in self.redundancy.items():
                k = next(i for i, r in enumerate(red) if r.block == b)
                row[m] = red[k].score
                row[f"{m}_rank"] = k + 1
            out.append(row)
        return out


def check_inputs(model: LoadedModel, suite: Suite | None, params: LayersParams,
                 slopes: Mapping[int, float] | None = None) -> None:
    """Every check that needs the model or the suite but no computation (the pipeline runs it before
    writing anything): hookable model, ``prune_max`` below its block count, >= 2 SAE layers, slopes."""
    params.validate()
    check_hookable(model, "--model")
    n = int(model.n_layers)
    if params.prune_max >= n:
        raise InputError(f"prune_max: expected an integer in 0..{n - 1} for {model.name!r} ({n} blocks). "
                         f"Got {params.prune_max} instead.")
    if suite is not None and len(suite.layers) < 2:
        raise InputError(f"sae: expected a suite with at least 2 layers. Got layers {suite.layers} instead.")
    for k, v in (slopes or {}).items():
        if not isinstance(k, (int, np.integer)) or not isinstance(v, (int, float, np.floating, type(None))):
            raise InputError(f"slopes: expected a mapping layer (int) -> slope (float). Got {k!r}: {v!r} instead.")


def _check_heldout(data: HeldoutRows, params: LayersParams) -> None:
    want = (params.n_blocks, params.block_len + 1)
    if tuple(np.shape(data.rows)) != want:
        raise InputError(f"heldout: expected similarity rows of shape {want} (n_blocks, 1 + block_len). "
                         f"Got {tuple(np.shape(data.rows))} instead.")
    if params.prune_max > 0:
        want = (params.loss_blocks, params.loss_block_len + 1)
        if tuple(np.shape(data.loss_rows)) != want:
            raise InputError(f"heldout: expected loss rows of shape {want} (loss_blocks, 1 + loss_block_len). "
                             f"Got {tuple(np.shape(data.loss_rows))} instead.")


def _check_representations(reps, model: LoadedModel, data: HeldoutRows) -> np.ndarray:
    want = (int(model.n_layers) + 1, data.rows.shape[0], data.rows.shape[1] - 1, int(model.d_model))
    reps = np.asarray(reps)
    if reps.shape != want or not np.issubdtype(reps.dtype, np.floating):
        raise InputError(f"representations: expected a float array of shape {want} (n_layers + 1, n_blocks, "
                         f"block_len, d_model) for the held-out rows. Got {reps.dtype} {reps.shape} instead.")
    return reps.astype(np.float32, copy=False)


def _matrices(model, data: HeldoutRows, params: LayersParams, mfp: str, checkpoint: Checkpoint | None,
              progress, representations: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Similarity matrices per measure; activations are read (or reloaded) only when a matrix is missing."""
    rows = np.asarray(data.rows, dtype=np.int64)
    rows_fp = fingerprint(rows)
    acts: list[np.ndarray] = [] if representations is None else [representations]

    def get_acts() -> np.ndarray:
        if not acts:
            def read() -> dict[str, np.ndarray]:
                t = time.perf_counter()
                a = read_representations(model, rows, batch_size=ACT_BATCH)
                say(progress, f"layers: activations {a.shape} in {time.perf_counter() - t:.1f}s")
                return {"acts": a}

            fp = fingerprint("layers.activations", mfp, rows_fp)
            acts.append(read()["acts"] if checkpoint is None else checkpoint.arrays("activations", fp, read)["acts"])
        return acts[0]

    mats: dict[str, np.ndarray] = {}
    for m in params.measures:
        def compute(m=m) -> dict[str, np.ndarray]:
            t = time.perf_counter()
            res = similarity_matrices(get_acts(), [m], progress=progress)
            say(progress, f"layers: {m} matrix in {time.perf_counter() - t:.1f}s")
            return res

        fp = fingerprint("layers.matrix", m, UAS_SKIP, mfp, rows_fp, *(["debiased"] if m == "cka" else []))
        mats.update(compute() if checkpoint is None else checkpoint.arrays(f"matrix_{m}", fp, compute))
    return mats


def analyze(model: LoadedModel, suite: Suite | None, params: LayersParams | None = None, *,
            slopes: Mapping[int, float] | None = None, heldout: HeldoutRows | None = None,
            representations: np.ndarray | None = None, checkpoint: Checkpoint | None = None,
            progress: Callable[[str], None] | None = None) -> LayersResult:
    """The whole layer comparison of a loaded model.

    Parameters
    ----------
    model : LoadedModel
        A transformers causal LM (hooks go on its decoder blocks; restored afterwards).
    suite : Suite or None
        SAE suite for the slopes and feature matching (None skips that part).
    params : LayersParams, optional
        Validated first (default ``LayersParams()``).
    slopes : mapping layer -> slope, optional
        Galaxy slopes to use instead of refitting (e.g. read from a ``galaxy.json``).
    heldout : HeldoutRows, optional
        Token rows to read (default: :func:`heldout_rows` of the built-in corpus with ``params``).
    representations : ndarray [n_layers + 1, n_blocks, block_len, d_model], optional
        The representations of ``heldout.rows`` (as :func:`read_representations` returns them) when a
        forward pass elsewhere already read them (the demo's harvest, through a
        :class:`featuregeo.io.taps.ResidualTap`); then the model is not run for the similarity measures.
    checkpoint : Checkpoint, optional
        Stores and reuses the units listed in the module docstring.
    progress : callable, optional
        Receives one line of text per step.

    Returns
    -------
    LayersResult

    Examples
    --------
    >>> from featuregeo.io.models import load_model                          # doctest: +SKIP
    >>> r = analyze(load_model(), None, LayersParams.fast(measures=("cka",)))  # doctest: +SKIP
    >>> r.most_redundant("cka", 3)                                           # doctest: +SKIP
    """
    t0 = time.perf_counter()
    params = (params or LayersParams()).validate()
    check_inputs(model, suite, params, slopes)
    data = heldout if heldout is not None else heldout_rows(model.tokenizer, params)
    _check_heldout(data, params)
    if representations is not None:
        representations = _check_representations(representations, model, data)
    mfp = model_fingerprint(model)
    say(progress, f"layers: {model.name} ({model.n_layers} blocks), {data.n_tokens} tokens, measures "
                  f"{', '.join(params.measures)}")
    mats = _matrices(model, data, params, mfp, checkpoint, progress, representations)
    red = {m: redundancy(mats[m]) for m in params.measures}
    base, deb_red = (None, None), None
    if "cka" in params.measures:
        deb_red = redundancy(mats["cka_debiased"])
        base = gaussian_cka_baseline(int(data.n_tokens), int(model.d_model), seed=params.seed)
    sae = None
    if suite is not None:
        sae = sae_geometry(suite, thresholds=params.thresholds, null=True, null_assignment=params.null_assignment,
                           slopes=slopes, seed=params.seed, checkpoint=checkpoint, progress=progress)
    pruning = None
    if params.prune_max > 0:
        pruning = pruning_check(model, np.asarray(data.loss_rows, dtype=np.int64),
                                {m: [r.block for r in red[m]] for m in params.measures},
                                prune_max=params.prune_max, random_drops=params.random_drops, seed=params.seed,
                                checkpoint=checkpoint, model_fp=mfp, batch_size=LOSS_BATCH, progress=progress)
    labels = ["embed"] + [str(L) for L in range(model.n_layers)]
    return LayersResult(params=params, model=str(model.name), labels=labels, matrices=mats, redundancy=red, sae=sae,
                        pruning=pruning, data=data, seconds=time.perf_counter() - t0, cka_baseline=base[0],
                        cka_debiased_baseline=base[1], cka_debiased_redundancy=deb_red)
