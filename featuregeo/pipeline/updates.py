"""Updates pipeline: validate everything, load the model, split each layer's update (resumable), save, plot.

``run(model, out, params)`` writes into ``out``:

* ``updates.json`` / ``updates.npz`` / ``updates.csv`` — the :class:`~featuregeo.tl.updates.UpdatesResult`
  (read back with ``UpdatesResult.load(out)``);
* ``updates_alignment.png``, ``updates_spearman.png``, ``updates_sensitivity.png`` — the figures
  (:func:`featuregeo.pl.updates.figure_names`);
* ``.checkpoint/`` — one finished unit per transition (``layer_<l>``); a rerun with the same inputs
  reuses them.

The options are checked before the model is loaded, and the model-dependent checks (transitions in
range, enough held-out text) before anything is written: bad input leaves ``out`` untouched.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log, output_dir
from featuregeo.pipeline.layers import check_out
from featuregeo.tl.updates import UpdatesParams, UpdatesResult

__all__ = ["run"]


def run(model: Any, out: str | os.PathLike, params: UpdatesParams | None = None, *, corpus=None,
        progress: Callable[[str], None] | None = log) -> UpdatesResult:
    """Layer-update geometry of ``model``; writes the result, figures and checkpoint into ``out``.

    Parameters
    ----------
    model : str or LoadedModel
        A model name/path for :func:`featuregeo.io.models.load_model` (``"default"``: Gemma 3 270M).
    out : path
        Output directory (created; must not be a file).
    params : UpdatesParams, optional
        Default ``UpdatesParams()``; ``UpdatesParams.fast()`` for small settings.
    corpus : Corpus, optional
        Text for the held-out rows (default: the built-in corpus).
    progress : callable or None, default: lines on stderr

    Returns
    -------
    UpdatesResult

    Examples
    --------
    >>> res = run("default", "out/updates", UpdatesParams(layers=(3, 9)))      # doctest: +SKIP
    """
    from featuregeo.pl import updates as plot
    from featuregeo.tl import updates as tl

    params = params if params is not None else UpdatesParams()
    if not isinstance(params, UpdatesParams):
        raise InputError(f"params: expected UpdatesParams. Got {type(params).__name__} instead.")
    params.validate()
    out = check_out(out)
    from featuregeo.io.models import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    tl.check_inputs(loaded, params)
    data = tl.heldout_rows(loaded.tokenizer, params, corpus=corpus)
    out = output_dir(out)
    if progress:
        progress(f"updates: {loaded.name} ({loaded.n_layers} blocks) -> {out}")
    with Checkpoint(out / ".checkpoint") as ck:
        result = tl.analyze(loaded, params, heldout=data, checkpoint=ck, progress=progress)
        result.save(out)
        plot.plot_all(result, out)
    return result
