"""Layers pipeline: validate everything, load the model, compare its layers (resumable), save, plot.

``run(model, out, params, sae=..., galaxy=...)`` writes into ``out``:

* ``layers.json`` / ``layers.npz`` / ``layers.csv`` — the :class:`~featuregeo.tl.layers.LayersResult`
  (read back with ``LayersResult.load(out)``);
* ``layers_<measure>.png``, ``layers_pruning.png``, ``layers_matching.png`` — the figures
  (:func:`featuregeo.pl.layers.figure_names`);
* ``.checkpoint/`` — finished units (activations, matrices, SAE slopes and matches, each pruning
  evaluation); a rerun with the same inputs reuses them.

Every option, the ``--galaxy`` file and the SAE source are checked before the model is loaded, and
the model-dependent checks (``prune_max`` below its block count, enough held-out text) before
anything is written: bad input leaves ``out`` untouched.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import Suite
from featuregeo.core.errors import InputError
from featuregeo.core.util import check_output_path
from featuregeo.pipeline.common import log, output_dir
from featuregeo.tl.layers import LayersParams, LayersResult

__all__ = ["read_galaxy_slopes", "check_out", "run"]


def _slope_of(rec: dict) -> float | None:
    """The slope of one galaxy layer record: ``slope`` as a number, or nested (``slope.value``,
    ``fit.slope``, ...) in newer files; null/activation slopes are never taken."""
    v = rec.get("slope")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, dict):
        for k in ("value", "slope"):
            if isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool):
                return float(v[k])
    for key, sub in rec.items():
        if isinstance(sub, dict) and "null" not in key and "activation" not in key:
            got = _slope_of(sub)
            if got is not None:
                return got
    return None


def read_galaxy_slopes(path: str | os.PathLike) -> dict[int, float]:
    """Slope per layer from a ``galaxy.json`` (or the folder holding it), old or new layout.

    Accepts a list of layer records, or an object with such a list under ``"layers"``; each record
    has ``"layer"`` and a slope (a number under ``"slope"``, or nested one level down).

    Raises
    ------
    InputError
        Missing or unreadable file, not JSON, or no layer with a slope.
    """
    p = Path(path)
    f = p / "galaxy.json" if p.is_dir() else p
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--galaxy {path}: no such file; expected a galaxy.json (or its folder) written by "
                         "`featuregeo galaxy`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--galaxy {f}: not readable JSON ({type(e).__name__}); expected a galaxy.json written by "
                         "`featuregeo galaxy`") from None
    recs = doc.get("layers") if isinstance(doc, dict) else doc
    if not isinstance(recs, list):
        raise InputError(f"--galaxy {f}: expected a list of layer records (or one under \"layers\"). Got "
                         f"{type(recs).__name__} instead.")
    slopes: dict[int, float] = {}
    for r in recs:
        if not isinstance(r, dict) or not isinstance(r.get("layer"), int) or isinstance(r.get("layer"), bool):
            continue
        s = _slope_of(r)
        if s is not None and math.isfinite(s):
            slopes[int(r["layer"])] = s
    if not slopes:
        raise InputError(f"--galaxy {f}: no layer record with a \"layer\" and a finite \"slope\"; expected a galaxy.json "
                         "written by `featuregeo galaxy`")
    return slopes


def check_out(out: str | os.PathLike) -> Path:
    """Reject an ``out`` that is, or lies under, a file — without creating anything."""
    return check_output_path(out)


def run(model: Any, out: str | os.PathLike, params: LayersParams | None = None, *, sae: str | Suite | None = "default",
        galaxy: str | os.PathLike | None = None, corpus=None, heldout=None, representations=None,
        progress: Callable[[str], None] | None = log) -> LayersResult:
    """Layer comparison of ``model``; writes the result, figures and checkpoint into ``out``.

    Parameters
    ----------
    model : str or LoadedModel
        A model name/path for :func:`featuregeo.io.models.load_model` (``"default"``: Gemma 3 270M).
    out : path
        Output directory (created; must not be a file).
    params : LayersParams, optional
        Default ``LayersParams()``; ``LayersParams.fast()`` for the small settings.
    sae : str, Suite or None, default="default"
        SAE source for slopes and feature matching; None or ``"none"`` skips that part.
    galaxy : path, optional
        A ``galaxy.json`` (or its folder) whose slopes replace refitting.
    corpus : Corpus, optional
        Text for the held-out rows (default: the built-in corpus).
    heldout : HeldoutRows, optional
        The held-out rows themselves (instead of drawing them from ``corpus``).
    representations : ndarray, optional
        Their representations, already read (see :func:`featuregeo.tl.layers.analyze`).
    progress : callable or None, default: lines on stderr

    Returns
    -------
    LayersResult
        Also saved as ``out/layers.json`` (+ ``.npz``, ``.csv``); figures under their standard names.

    Examples
    --------
    >>> res = run("default", "out/layers", LayersParams.fast())      # doctest: +SKIP
    """
    from featuregeo.pl import layers as plot
    from featuregeo.tl import layers as tl

    params = (params if params is not None else LayersParams())
    if not isinstance(params, LayersParams):
        raise InputError(f"params: expected LayersParams. Got {type(params).__name__} instead.")
    params.validate()
    out = check_out(out)
    slopes = read_galaxy_slopes(galaxy) if galaxy is not None else None
    suite = None
    if isinstance(sae, Suite):
        suite = sae
    elif sae is not None and str(sae) != "none":
        from featuregeo.io import open_suite

        suite = open_suite(sae)
    if suite is not None and len(suite.layers) < 2:
        raise InputError(f"--sae {suite.name}: expected a suite with at least 2 layers. Got layers {suite.layers} instead.")
    from featuregeo.io.models import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    tl.check_inputs(loaded, suite, params, slopes)
    data = heldout if heldout is not None else tl.heldout_rows(loaded.tokenizer, params, corpus=corpus)
    out = output_dir(out)
    if progress:
        progress(f"layers: {loaded.name} ({loaded.n_layers} blocks), SAE {suite.name if suite else 'none'} -> {out}")
    with Checkpoint(out / ".checkpoint") as ck:
        result = tl.analyze(loaded, suite, params, slopes=slopes, heldout=data, representations=representations,
                            checkpoint=ck, progress=progress)
        result.save(out)
        plot.plot_all(result, out)
    return result
