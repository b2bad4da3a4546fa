"""Lobes pipeline: SAE source + harvest -> :class:`~featuregeo.tl.lobes.LobesResult` on disk, with figures.

Layout of ``OUT``::

    OUT/lobes.json, lobes.npz, lobes.csv     the LobesResult (LobesResult.load(OUT) reads it back)
    OUT/layer_L/lobes_*.png                  the figures of layer L (featuregeo.pl.lobes.FIGURES)
    OUT/.checkpoint/layer_L/                 finished layers, reused by a rerun with the same inputs
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import parse_layers
from featuregeo.io import open_suite
from featuregeo.io.harvest import Harvest
from featuregeo.pipeline.common import log, output_dir
from featuregeo.tl import lobes as tl_lobes
from featuregeo.tl.lobes import LobesParams, LobesResult


def open_harvest(path: str | Path) -> Harvest:
    """A readable :class:`~featuregeo.io.harvest.Harvest`, or a one-line InputError naming the file at fault.

    Reads ``harvest.json`` and the block metadata of every shard (not the firing), so a garbled
    manifest or a damaged shard is reported here, before any work.
    """
    path = Path(path)
    manifest = path / "harvest.json"
    try:
        h = Harvest(path)
        if not isinstance(h.manifest, dict) or not isinstance(h.config, dict):
            raise TypeError("not a JSON object")
        layers = h.sae_layers
        if not all(isinstance(x, int) for x in layers):
            raise TypeError(f"sae_layers {layers!r}")
    except InputError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{manifest}: not readable JSON ({type(e).__name__}: {e}); expected the harvest.json "
                         "written by `featuregeo harvest`") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{manifest}: not a harvest manifest (missing or wrong {e}); expected the harvest.json "
                         "written by `featuregeo harvest`") from None
    except OSError as e:
        raise InputError(f"{manifest}: cannot be read ({e.strerror or e}); expected a readable harvest") from None
    try:
        n = h.n_blocks
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, EOFError) as e:
        raise InputError(f"{path / 'shards'}: a damaged shard ({type(e).__name__}: {e}); expected the shards "
                         "written by `featuregeo harvest` (rerun it to repair)") from None
    if n < 1:
        raise InputError(f"{path}: no finished shards; expected a harvest with at least one complete block")
    return h


def run(source: str, harvest_dir: str | Path, out: str | Path, params: LobesParams | None = None, *,
        layers: Sequence[int] | str | None = None, progress: Callable[[str], Any] | None = log,
        figures: bool = True, scheduler: str | None = None, workers: int | None = None) -> LobesResult:
    """Lobes of every SAE layer of a harvest (or ``layers``): analyse, save to ``out``, draw figures.

    Everything is validated first (parameters, harvest, layers, feature counts); finished layers
    are kept in ``out/.checkpoint`` and reused by a rerun with the same inputs.

    Parameters
    ----------
    source : str
        The SAE source the harvest recorded (see :func:`featuregeo.io.open_suite`).
    harvest_dir : path
        A directory written by ``featuregeo harvest``.
    out : path
        Output directory (created).
    params : LobesParams, optional
    layers : list of int or str, optional
        Default: every SAE layer of the harvest.
    progress : callable, optional
        One line per step (default: stderr).
    figures : bool, default=True
        Draw ``out/layer_L/lobes_*.png``.
    scheduler : str, optional
        A Dask scheduler address: co-occurrence counts are summed over chunks of blocks on its
        workers (the same counts).  A scheduler that does not answer is an InputError.
    workers : int, optional
        Start a local Dask cluster of this many worker processes instead.

    Returns
    -------
    LobesResult
        Also saved as ``out/lobes.json`` (+ ``.npz``, ``.csv``).
    """
    from featuregeo.io.cluster import check_cluster_options, connect

    params = (params if params is not None else LobesParams()).validate()
    check_cluster_options(scheduler, workers, probe=True)
    wanted = parse_layers(layers) if layers is not None else None
    harvest = open_harvest(harvest_dir)
    missing = [x for x in (wanted or []) if x not in harvest.sae_layers]
    if missing:
        raise InputError(f"--layers: {missing} have no firing in {harvest.path}; expected some of {harvest.sae_layers}")
    suite = open_suite(source)
    wanted = tl_lobes.check_inputs(harvest, suite, wanted)
    tl_lobes.harvest_fingerprint(harvest)
    out = output_dir(out)
    with Checkpoint(out / ".checkpoint") as ck, connect(scheduler, workers, progress=progress) as client:
        result = tl_lobes.analyze(harvest, suite, params, layers=wanted, checkpoint=ck, progress=progress,
                                  client=client)
        result.save(out)
        if figures:
            from featuregeo.pl import lobes as pl_lobes

            pl_lobes.plot_all(result, out)
    if progress is not None:
        progress(f"lobes: wrote {out}")
    return result


__all__ = ["run", "open_harvest"]
