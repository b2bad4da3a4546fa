"""Galaxy pipeline: source -> :func:`featuregeo.tl.galaxy.analyze` (resumable) -> save -> figures.

>>> from featuregeo.pipeline import galaxy                                   # doctest: +SKIP
>>> result = galaxy.run("default", "out/galaxy", GalaxyParams(), layers=[4, 8])

Writes into ``out``: ``galaxy.json`` / ``galaxy.npz`` / ``galaxy.csv`` (the
:class:`~featuregeo.tl.galaxy.GalaxyResult`, read back with ``GalaxyResult.load(out)``), the figures
``galaxy_spectra.png``, ``galaxy_slopes.png``, ``galaxy_entropy.png`` (standard names, see
:data:`featuregeo.pl.galaxy.FIGURES`), and ``.checkpoint/`` (one unit per layer; a rerun reuses the
layers whose parameters, source content and activations are unchanged).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log, output_dir
from featuregeo.tl.galaxy import GalaxyParams, GalaxyResult


def run(source: str | os.PathLike, out: str | os.PathLike, params: GalaxyParams | None = None, *,
        layers: Iterable[int] | str | None = None, activations: str | os.PathLike | None = None,
        reference: bool = True, progress: Callable[[str], None] | None = log, scheduler: str | None = None,
        workers: int | None = None) -> GalaxyResult:
    """Galaxy analysis of a source; saves the result and figures into ``out`` and returns the result.

    Parameters
    ----------
    source : str or PathLike
        A source string (see :func:`featuregeo.io.open_suite`).
    out : str or PathLike
        Output directory (created; a file in the way is a one-line InputError).
    params : GalaxyParams, optional
    layers : list of int or str, optional
        Layers to analyse (``"0-25:2"`` accepted); all when None.
    activations : path, optional
        Raw activations file (:func:`featuregeo.io.activations.open_activations`); every analysed
        layer must have an array.
    reference : bool, default=True
        Draw the paper's slopes on the slope figure.
    progress : callable, optional
        One line per step (default: stderr).
    scheduler : str, optional
        A Dask scheduler address: covariance sums are computed chunk by chunk on its workers and
        added in chunk order (the same spectrum).  A scheduler that does not answer is an InputError.
    workers : int, optional
        Start a local Dask cluster of this many worker processes instead.

    Returns
    -------
    GalaxyResult
    """
    from featuregeo.io import open_suite
    from featuregeo.io.activations import open_activations
    from featuregeo.io.cluster import check_cluster_options, connect
    from featuregeo.io.reference import paper_galaxy_slopes
    from featuregeo.pl import galaxy as plot
    from featuregeo.tl import galaxy

    params = (params or GalaxyParams())
    if not isinstance(params, GalaxyParams):
        raise InputError(f"params: expected GalaxyParams. Got {type(params).__name__} instead.")
    params.validate()
    check_cluster_options(scheduler, workers, probe=True)
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise InputError(f"--out: expected a directory path. Got {out!r} instead.")
    suite = open_suite(source, layers)
    acts = open_activations(activations) if activations else None
    if acts is not None:
        acts.require(suite.layers)
    out = output_dir(Path(out))
    if progress:
        progress(f"galaxy: {suite.name}, layers {suite.layers} -> {out}")
    with Checkpoint(out / ".checkpoint") as ck, connect(scheduler, workers, progress=progress) as client:
        result = galaxy.analyze(suite, params, activations=acts, checkpoint=ck, progress=progress, client=client)
        result.save(out)
        plot.plot_all(result, out, reference=paper_galaxy_slopes() if reference else None)
    return result


__all__ = ["run"]
