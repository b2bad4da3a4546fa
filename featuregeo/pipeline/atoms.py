"""Atoms pipeline: validate, open the SAE suite, analyse per layer (resumable), save, plot.

Files written into ``out``:

* ``atoms.json`` / ``atoms.npz`` / ``atoms.csv`` — the :class:`~featuregeo.tl.atoms.AtomsResult`
  (``AtomsResult.load(out)`` reads it back; the CSV has one row per layer, space and method);
* ``crystals.csv`` — every layer's crystals, columns :data:`~featuregeo.tl.atoms.CRYSTAL_COLUMNS`
  (header only without an SAE);
* ``layer_L/atoms_*.png`` — the figures of :func:`featuregeo.pl.atoms.plot_all`;
* ``.checkpoint/layer_L/`` — finished layers, reused by a rerun with the same inputs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_text, parse_layers, say
from featuregeo.pipeline.common import log, output_dir

#: what ``fast=True`` changes (the demo): at most 24 pairs per task, 100 analogy quadruples per task
FAST = {"max_pairs": 24, "max_quadruples": 100}


def fast_params(params):
    """``params`` with the :data:`FAST` caps (an explicit smaller ``max_pairs`` is kept)."""
    mp = params.max_pairs
    return params.replace(max_pairs=FAST["max_pairs"] if mp is None else min(mp, FAST["max_pairs"]),
                          max_quadruples=min(params.max_quadruples, FAST["max_quadruples"]))


def crystals_csv(result) -> str:
    """The text of ``crystals.csv``: :meth:`AtomsResult.crystal_rows` under the :data:`CRYSTAL_COLUMNS` header."""
    from featuregeo.tl.atoms import CRYSTAL_COLUMNS

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CRYSTAL_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in result.crystal_rows():
        w.writerow({k: ("" if r[k] is None else r[k]) for k in CRYSTAL_COLUMNS})
    return buf.getvalue()


def _check_layers(layers) -> list[int]:
    parsed = parse_layers(layers)
    if not parsed:
        raise InputError(f"--layers: expected explicit layers like '3,9,15'. Got {layers!r} instead.")
    return parsed


def run(model, layers: Sequence[int] | str, out: str | Path, params=None, *, sae: str | None = "default",
        fast: bool = False, plots: bool = True, progress=log):
    """Atom scale for ``layers`` of ``model``: word-pair analyses on held-out pairs and crystals.

    Everything is validated (params, layers, the SAE source, the pair files, ``out``) before the
    model is loaded.

    Parameters
    ----------
    model : str or LoadedModel
        A model name or path (loaded here) or a loaded model.
    layers : list of int or str
        E.g. ``[3, 9]`` or ``"3,9"``.
    out : path
        Output directory (created; a file in the way is an :class:`InputError`).
    params : AtomsParams, optional
    sae : str or None, default="default"
        SAE source for the crystal search (:func:`featuregeo.io.open_suite`); None or ``"none"`` skips it.
    fast : bool, default=False
        Apply :data:`FAST` (the demo).
    plots : bool, default=True
        Draw the figures (:func:`featuregeo.pl.atoms.plot_all`).
    progress : callable, optional
        One line of text per stage (default: stderr).

    Returns
    -------
    AtomsResult
        Also saved in ``out`` (see the module docstring for the files).
    """
    from featuregeo.core.checkpoint import Checkpoint
    from featuregeo.tl import atoms

    params = params if params is not None else atoms.AtomsParams()
    if not isinstance(params, atoms.AtomsParams):
        raise InputError(f"params: expected AtomsParams. Got {type(params).__name__} instead.")
    params = (fast_params(params) if fast else params).validate()
    layers = _check_layers(layers)
    if sae is not None and not isinstance(sae, str):
        raise InputError(f"--sae: expected a source string or 'none'. Got {sae!r} instead.")
    suite = None
    if sae not in (None, "none", ""):
        from featuregeo.io import open_suite

        suite = open_suite(sae, layers)
    if params.sae_space and suite is None:
        raise InputError("--sae-space: needs an SAE source; expected --sae SOURCE (not 'none')")
    atoms.load_pair_tasks(params)  # reads the pair files: bad ones fail here, before the model loads
    out = output_dir(out)
    with Checkpoint(out / ".checkpoint") as ck:
        if isinstance(model, str):
            from featuregeo.io.models import load_model

            say(progress, f"atoms: loading model {model!r}")
            model = load_model(model)
        result = atoms.analyze(model, suite, params, layers=layers, checkpoint=ck, progress=progress)
        result.save(out)
        atomic_write_text(out / "crystals.csv", crystals_csv(result))
        if ck.reused:
            say(progress, f"atoms: reused finished layers {ck.reused} from {ck.directory}")
    if plots:
        from featuregeo.pl import atoms as plot_atoms

        plot_atoms.plot_all(result, out)
    return result


__all__ = ["FAST", "crystals_csv", "fast_params", "run"]
