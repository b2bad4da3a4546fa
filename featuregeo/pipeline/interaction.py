"""Interaction pipeline: validate, load the model (and the SAE suite), analyse (resumable), save, plot.

>>> from featuregeo.pipeline import interaction                        # doctest: +SKIP
>>> result = interaction.run("default", "5-8", "out/interaction")

Files written into ``out``:

* ``interaction.json`` / ``interaction.npz`` / ``interaction.csv`` — the
  :class:`~featuregeo.tl.interaction.InteractionResult` (``InteractionResult.load(out)``; the CSV has
  one row per node layer);
* ``basis_L<layer>.npz`` — per node layer, float64: ``C`` (reads features, ``C^T [f, 1]``), ``P``
  (their directions), ``importance``, ``gram_eigenvalues``, ``m_eigenvalues``, ``pca_U``,
  ``pca_eigenvalues`` (``np.load(path, allow_pickle=False)``);
* ``interaction_spectra.png``, ``interaction_ablation.png``, ``interaction_graph.png``,
  ``interaction_edges.png``, ``interaction_convergence.png`` (:data:`featuregeo.pl.interaction.FIGURES`);
* ``.checkpoint/`` — finished units, reused by a rerun with the same inputs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, say
from featuregeo.pipeline.common import log, output_dir

#: decoder blocks of the default model (Gemma 3 270M): lets a bad section fail before it loads
DEFAULT_N_LAYERS = 18


def write_bases(result, out: str | Path) -> list[Path]:
    """Write ``basis_L<layer>.npz`` for every node layer of ``result``; returns the paths."""
    paths = []
    for r in result.layers:
        buf = io.BytesIO()
        np.savez(buf, **result.basis_arrays(r.layer))
        p = Path(out) / f"basis_L{r.layer}.npz"
        atomic_write_bytes(p, buf.getvalue())
        paths.append(p)
    return paths


def run(model, layers, out: str | os.PathLike, params=None, *, sae: str | None = "default", plots: bool = True,
        progress: Callable[[str], None] | None = log):
    """Interaction basis of the section ``layers`` of ``model``; saves everything into ``out``.

    Everything (params, the section, the SAE source, ``out``) is validated before the model loads.

    Parameters
    ----------
    model : str or LoadedModel
        A model name or path (loaded here) or a loaded model.
    layers : str or tuple
        The section, e.g. ``"5-8"`` or ``(5, 8)``; overrides ``params.layers``.
    out : path
        Output directory (created; a file in the way is an :class:`InputError`).
    params : InteractionParams, optional
    sae : str or None, default="default"
        SAE source for the decoder-cosine comparison (:func:`featuregeo.io.open_suite`); None or
        ``"none"`` skips it.
    plots : bool, default=True
    progress : callable, optional
        One line of text per stage (default: stderr).

    Returns
    -------
    InteractionResult
    """
    from featuregeo.tl import interaction

    params = params if params is not None else interaction.InteractionParams()
    if not isinstance(params, interaction.InteractionParams):
        raise InputError(f"params: expected InteractionParams. Got {type(params).__name__} instead.")
    if layers is not None:
        params = params.replace(layers=interaction.parse_section(layers))
    params.validate()
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise InputError(f"--out: expected a directory path. Got {out!r} instead.")
    if sae is not None and not isinstance(sae, str):
        raise InputError(f"--sae: expected a source string or 'none'. Got {sae!r} instead.")
    suite = None
    if sae not in (None, "none", ""):
        from featuregeo.io import open_suite

        suite = open_suite(sae)
        have = [L for L in params.node_layers if L in suite]
        suite = suite.select(have) if have else None
    if not isinstance(model, str) and not hasattr(model, "model"):
        raise InputError(f"--model: expected a model name or a LoadedModel. Got {type(model).__name__} instead.")
    if isinstance(model, str):
        from featuregeo.io.models import DEFAULT_NAME, load_model

        if model == DEFAULT_NAME and params.layers[1] > DEFAULT_N_LAYERS - 1:
            a, b = params.layers
            raise InputError(f"layers: section {a}-{b} is out of range for 'default' ({DEFAULT_N_LAYERS} blocks); "
                             f"expected A < B in 0..{DEFAULT_N_LAYERS - 1}")
        say(progress, f"interaction: loading model {model!r}")
        model = load_model(model)
    interaction.check_inputs(model, params)  # other models: checked once loaded, still before writing
    out = output_dir(Path(out))
    with Checkpoint(out / ".checkpoint") as ck:
        result = interaction.analyze(model, params, suite=suite, checkpoint=ck, progress=progress)
        result.save(out)
        write_bases(result, out)
        if ck.reused:
            say(progress, f"interaction: reused finished units {ck.reused} from {ck.directory}")
    if plots:
        from featuregeo.pl import interaction as plot

        plot.plot_all(result, out)
    return result


__all__ = ["DEFAULT_N_LAYERS", "run", "write_bases"]
