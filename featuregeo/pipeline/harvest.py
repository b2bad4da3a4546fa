"""Harvest pipeline: which SAE features fire in which blocks of a corpus (resumable shards).

:func:`run` checks every argument — params, split options, the output directory (and a
``harvest.json`` already in it), the corpus (read in full), the SAE source (weights loaded) —
before it loads the model, and writes nothing until all of them pass.  The harvest directory is
its own checkpoint (atomic shards; see :mod:`featuregeo.io.harvest`), so there is no
``.checkpoint`` unit store beyond its lock.  Returns the :class:`~featuregeo.io.harvest.Harvest`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from featuregeo.core.errors import InputError
from featuregeo.core.results import check_choice, check_float, check_int
from featuregeo.io.corpus import Corpus
from featuregeo.io.harvest import Harvest, HarvestParams
from featuregeo.io.models import LoadedModel
from featuregeo.pipeline.common import log

SPLITS = ("train", "heldout", "all")
ORDERS = ("interleave", "corpus")


def check_options(out, *, split: str, held_out: float, order: str, seed: int, device: str) -> None:
    """The non-params arguments of :func:`run`, checked (one-line InputError naming the option)."""
    check_choice("--split", split, SPLITS)
    check_choice("--order", order, ORDERS)
    if split != "all":
        check_float("--held-out", held_out, low=0.0, high=1.0, low_open=True, high_open=True)
    check_int("--seed", seed, minimum=0)
    if not isinstance(device, str) or not device.strip():
        raise InputError(f"--device: expected a torch device such as 'cpu' or 'cuda:0'. Got {device!r} instead.")
    from featuregeo.io.harvest import check_out_dir, read_manifest

    out = check_out_dir(out)
    if (out / "harvest.json").exists():
        read_manifest(out)  # a damaged manifest is refused now, not after the model has loaded


def prepare_corpus(corpus: str | Corpus, *, genre: str, split: str, held_out: float, order: str, seed: int,
                   progress: Callable[[str], Any]) -> Corpus:
    """Load (when given as a string), split and order the corpus; skipped folder files are reported."""
    if isinstance(corpus, Corpus):
        docs = corpus
    else:
        from featuregeo.io.corpus import load_corpus

        genre_kw = {"genre": genre} if Path(corpus).expanduser().is_dir() else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            docs = load_corpus(corpus, **genre_kw)
        for w in caught:
            progress(f"corpus: {w.message}")
    if split != "all":
        train, held = docs.split(held_out, seed=seed)
        docs = train if split == "train" else held
        if not len(docs):
            raise InputError(f"--split {split}: no documents of {len(train) + len(held)} fall in this part "
                             f"(--held-out {held_out}); expected a larger corpus, another --held-out or --split all")
    return docs.interleaved() if order == "interleave" else docs


def load_saes(suite) -> dict[int, Any]:
    """The sae-lens SAEs (encoders included) of every layer of ``suite``; {} for None."""
    if suite is None:
        return {}
    from featuregeo.io.saelens import load_sae

    return {layer: load_sae(suite.load(layer)) for layer in suite.layers}


def run(source: str | None, out: str | Path, params: HarvestParams | None = None, *,
        model: str | LoadedModel = "default", corpus: str | Corpus = "builtin", genre: str = "subfolder",
        split: str = "heldout", held_out: float = 0.1, order: str = "interleave",
        layers: Iterable[int] | None = None, device: str = "cpu", seed: int = 0,
        progress: Callable[[str], Any] | None = log, scheduler: str | None = None,
        workers: int | None = None, taps: Sequence[Any] = ()) -> Harvest:
    """Harvest ``source``'s SAEs (or only activations when ``source`` is None) on ``corpus``.

    Parameters
    ----------
    source : str or None
        An SAE source with encoders (sae-lens folders, ``saelens:...``, ``default``), or None /
        ``"none"`` to store activations only (then ``params.store_activations`` and ``layers``).
    out : path
        The harvest directory; the same command resumes an interrupted harvest.
    params : HarvestParams, optional
    model : str or LoadedModel, default="default"
        A name for :func:`featuregeo.io.models.load_model`, or a model already loaded.
    corpus : str or Corpus, default="builtin"
        ``builtin``, a .jsonl/.json/.parquet/.txt file, a folder, ``hf:NAME``, or a Corpus.
    genre : str, default="subfolder"
        For a folder corpus: a genre for every file, or ``subfolder``.
    split : {"heldout", "train", "all"}, default="heldout"
    held_out : float, default=0.1
        Held-out fraction of documents (deterministic by document id and ``seed``).
    order : {"interleave", "corpus"}, default="interleave"
        Round-robin over genres and sources (balanced prefixes), or the corpus's own order.
    layers : iterable of int, optional
        The SAE layers of ``source`` to harvest (default: all), or with ``source=None`` the layers
        whose activations are stored.
    device : str, default="cpu"
    seed : int, default=0
        Seed of the train / held-out split.
    progress : callable, optional
        Called with one line of text at a time (default: stderr).
    scheduler : str, optional
        A Dask scheduler address: shards are harvested by its workers (each loads the model and
        the SAEs once) into ``out``, which must be on storage every worker sees at the same path.
        Same files, byte for byte, as without it.  A scheduler that does not answer is an InputError.
    workers : int, optional
        Start a local Dask cluster of this many worker processes instead.
    taps : sequence of :class:`featuregeo.io.taps.ResidualTap`, optional
        Residuals of some blocks kept from the harvest's forward pass (the demo's shared pass).

    Returns
    -------
    Harvest
    """
    from featuregeo.io.cluster import check_cluster_options, connect
    from featuregeo.io.harvest import harvest

    say = progress or (lambda line: None)
    params = (params or HarvestParams()).validate()
    check_options(out, split=split, held_out=held_out, order=order, seed=seed, device=device)
    check_cluster_options(scheduler, workers)
    if source in (None, "none"):
        if not params.store_activations:
            raise InputError("SOURCE: 'none' harvests no firing; expected an SAE source or --store-activations")
        if not layers and not params.layers:
            raise InputError("--layers: SOURCE 'none' stores activations only; expected the layers to store")
        if layers:
            params = params.replace(layers=tuple(int(x) for x in layers)).validate()
    with connect(scheduler, workers, progress=say) as client:  # a silent scheduler fails here, before any loading
        suite = None
        if source not in (None, "none"):
            from featuregeo.io import open_suite

            suite = open_suite(source, layers)  # the source string and its layers, checked without reading weights
        docs = prepare_corpus(corpus, genre=genre, split=split, held_out=held_out, order=order, seed=seed,
                              progress=say)
        saes = load_saes(suite)
        if isinstance(model, LoadedModel):
            loaded = model
        else:
            from featuregeo.io.models import load_model

            loaded = load_model(model, device=device)
        if client is None:
            return harvest(loaded, docs, out, params, saes=saes, progress=say, taps=taps)
        if taps:
            raise InputError("taps: residual taps need the single-process harvest (no --scheduler/--workers)")
        from featuregeo.io.harvest.distributed import harvest_distributed

        return harvest_distributed(client, loaded, docs, out, params, saes=saes,
                                   source=None if suite is None else str(source), progress=say)
