"""Geometry of layer updates: the tokenwise part of each layer's update and its residual.

For each transition ``l -> l + 1`` (``h_l`` = output of block ``l``, so the update ``D = h_{l+1} - h_l``
is what block ``l + 1`` writes) on held-out tokens, the update is split into a tokenwise part ``T`` —
what a map of the token's own vector ``h_l`` can produce, fitted locally on the ``k`` nearest tokens
of *other* rows (diagonal or reduced-rank ridge maps), or one global affine map — and the residual
``R = D - T`` (arXiv 2604.02459; method choices in ``docs/analyses/updates.md``).

::

    from featuregeo.tl import updates
    result = updates.analyze(model, updates.UpdatesParams(), checkpoint=None, progress=print)
    result.table(); result.layer(9).fit("lowrank").cos_dt; result.layer(9).func("lowrank").spearman

Modules: :mod:`~featuregeo.tl.updates.params`, :mod:`~featuregeo.tl.updates.neighbours` (exact
blocked k-NN from other rows, brute-force reference, shuffled control), :mod:`~featuregeo.tl.updates.fits`,
:mod:`~featuregeo.tl.updates.geometry`, :mod:`~featuregeo.tl.updates.function` (KL, bootstrap Spearman),
:mod:`~featuregeo.tl.updates.analysis` (one transition), :mod:`~featuregeo.tl.updates.planted` (the planted
check), :mod:`~featuregeo.tl.updates.result`.  Model hooks: :mod:`featuregeo.io.update_hooks`.

Resumable units (with a :class:`~featuregeo.core.checkpoint.Checkpoint`): ``layer_<l>``, fingerprinted
by the params (except ``layers`` and ``batch_size``), the model's identity, the token rows and ``l``.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import fingerprint, say
from featuregeo.io.hooks import check_hookable
from featuregeo.io.models import LoadedModel
from featuregeo.io.update_hooks import final_logprobs, read_updates
from featuregeo.tl.layers.heldout import HeldoutRows, heldout_rows as _layers_heldout_rows, model_fingerprint
from featuregeo.tl.layers.params import LayersParams
from featuregeo.tl.updates.analysis import analyze_arrays, split_record, transition
from featuregeo.tl.updates.fits import fit_diag, fit_global, fit_lowrank, local_fits, tokenwise
from featuregeo.tl.updates.function import kl_divergence, patch_positions, spearman, spearman_boot
from featuregeo.tl.updates.geometry import dominant_subspace, geometry, row_cos
from featuregeo.tl.updates.neighbours import knn_brute_force, knn_other_rows, prepare, recall, shuffled_neighbours
from featuregeo.tl.updates.params import CLASSES, LOCAL_CLASSES, METRICS, UpdatesParams
from featuregeo.tl.updates.planted import PlantedUpdates, planted_updates
from featuregeo.tl.updates.result import UpdateFit, UpdateFunction, UpdatesLayer, UpdatesResult

__all__ = [
    "UpdatesParams", "UpdatesResult", "UpdatesLayer", "UpdateFit", "UpdateFunction", "analyze", "check_inputs",
    "heldout_rows", "transitions", "CLASSES", "LOCAL_CLASSES", "METRICS", "analyze_arrays", "split_record",
    "transition", "local_fits", "fit_diag", "fit_lowrank", "fit_global", "tokenwise", "geometry", "dominant_subspace", "row_cos",
    "knn_other_rows", "knn_brute_force", "prepare", "recall", "shuffled_neighbours", "spearman", "spearman_boot",
    "kl_divergence", "patch_positions", "PlantedUpdates", "planted_updates",
]


def transitions(model: LoadedModel, params: UpdatesParams) -> list[int]:
    """The transitions ``l`` to analyse (``0 .. n_layers - 2``); InputError naming the valid range."""
    n = int(model.n_layers)
    if params.layers is None:
        return list(range(n - 1))
    bad = [L for L in params.layers if not 0 <= L <= n - 2]
    if bad:
        raise InputError(f"layers: transitions {bad} are out of range for {model.name!r}; expected l in 0..{n - 2} "
                         f"(transition l -> l+1 is the update of block l+1)")
    return list(params.layers)


def check_inputs(model: LoadedModel, params: UpdatesParams) -> list[int]:
    """Every check that needs the model but no computation; returns the transitions."""
    params.validate()
    if not isinstance(model, LoadedModel):
        raise InputError(f"model: expected a LoadedModel from featuregeo.io.models.load_model. Got "
                         f"{type(model).__name__} instead.")
    check_hookable(model, "--model")
    if model.n_layers < 2:
        raise InputError(f"--model {model.name}: expected at least 2 blocks. Got {model.n_layers} instead.")
    return transitions(model, params)


def heldout_rows(tokenizer, params: UpdatesParams, *, corpus=None) -> HeldoutRows:
    """``n_rows`` held-out rows of ``1 + seq_len`` tokens (BOS first), one per document, genres interleaved
    (the held-out split of the built-in corpus by default; :func:`featuregeo.tl.layers.heldout_rows`)."""
    params.validate()
    lp = LayersParams(n_blocks=params.n_rows, block_len=params.seq_len, prune_max=0, seed=params.seed)
    try:
        return _layers_heldout_rows(tokenizer, lp, corpus=corpus)
    except InputError as e:
        raise InputError(str(e).replace("n_blocks:", "n_rows:").replace("--n-blocks", "--n-rows")
                         .replace("--block-len", "--seq-len")) from None


def analyze(model: LoadedModel, params: UpdatesParams | None = None, *, heldout: HeldoutRows | None = None,
            checkpoint: Checkpoint | None = None, progress: Callable[[str], None] | None = None) -> UpdatesResult:
    """The layer-update geometry of a loaded model.

    Parameters
    ----------
    model : LoadedModel
        A transformers causal LM whose blocks can be hooked (restored afterwards).
    params : UpdatesParams, optional
        Validated first (default ``UpdatesParams()``).
    heldout : HeldoutRows, optional
        Token rows ``[n_rows, 1 + seq_len]`` (default: :func:`heldout_rows` of the built-in corpus).
    checkpoint : Checkpoint, optional
        Stores and reuses one unit per transition (``layer_<l>``).
    progress : callable, optional
        Receives one line of text per step.

    Returns
    -------
    UpdatesResult

    Examples
    --------
    >>> from featuregeo.io.models import load_model                               # doctest: +SKIP
    >>> r = analyze(load_model(), UpdatesParams.fast(layers=(3, 9)))              # doctest: +SKIP
    >>> r.layer(9).fit("lowrank").explained                                       # doctest: +SKIP
    """
    t0 = time.perf_counter()
    params = (params or UpdatesParams()).validate()
    todo = check_inputs(model, params)
    data = heldout if heldout is not None else heldout_rows(model.tokenizer, params)
    rows = np.asarray(data.rows, dtype=np.int64)
    if rows.shape != (params.n_rows, params.seq_len + 1):
        raise InputError(f"heldout: expected rows of shape {(params.n_rows, params.seq_len + 1)} (n_rows, 1 + seq_len). "
                         f"Got {rows.shape} instead.")
    positions = patch_positions(params.seq_len, params.kl_positions, params.seed)
    mfp, rfp = model_fingerprint(model), fingerprint(rows)
    say(progress, f"updates: {model.name}, {len(todo)} transitions, {params.n_tokens} tokens "
                  f"({params.n_rows} rows x {params.seq_len}), k {params.k}, rank {params.rank}")
    cache: dict = {}

    def acts():
        if "acts" not in cache:
            t = time.perf_counter()
            cache["acts"] = read_updates(model, rows, batch_size=params.batch_size)
            say(progress, f"updates: activations read in {time.perf_counter() - t:.1f}s")
        return cache["acts"]

    def clean(pos: int):
        if pos not in cache:
            cache[pos] = final_logprobs(model, rows[:, :pos + 1])
        return cache[pos]

    layers = []
    for L in todo:
        def compute(L=L) -> UpdatesLayer:
            return transition(model, acts(), rows, L, params, positions, clean, progress=progress)

        fp = fingerprint("updates.layer", params.unit_dict(), mfp, rfp, L)
        layers.append(compute() if checkpoint is None else checkpoint.result(f"layer_{L}", fp, compute, UpdatesLayer))
    return UpdatesResult(params=params, model=str(model.name), d_model=int(model.d_model), data=data,
                         positions=positions, layers=layers, seconds=time.perf_counter() - t0)
