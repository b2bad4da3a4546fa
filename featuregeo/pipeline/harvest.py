"""Harvest pipeline: which SAE features fire in which blocks of a corpus (resumable shards)."""

from __future__ import annotations

from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log


def run(source: str | None, out: str | Path, *, model: str = "default", corpus: str = "builtin",
        genre: str = "subfolder", split: str = "heldout", held_out: float = 0.1, order: str = "interleave",
        layers=None, block_len: int = 256, threshold: float = 1.0, batch_size: int = 16, shard_batches: int = 4,
        max_blocks: int | None = None, max_blocks_per_doc: int | None = None, store_activations: bool = False,
        device: str = "cpu", seed: int = 0, progress=log):
    """Harvest ``source``'s SAEs (or only activations when ``source`` is None) on ``corpus``; returns the Harvest."""
    from featuregeo.io import open_suite
    from featuregeo.io.corpus import load_corpus
    from featuregeo.io.harvest import harvest
    from featuregeo.io.models import load_model
    from featuregeo.io.saelens import load_sae

    suite = open_suite(source, layers) if source not in (None, "none") else None
    if suite is None and not store_activations:
        raise InputError("SOURCE: 'none' harvests no firing; expected an SAE source or --store-activations")
    genre_kw = {"genre": genre} if Path(corpus).is_dir() else {}
    docs = load_corpus(corpus, **genre_kw)
    if split != "all":
        train, held = docs.split(held_out, seed=seed)
        docs = train if split == "train" else held
    if order == "interleave":
        docs = docs.interleaved()
    loaded = load_model(model, device=device)
    saes = {layer: load_sae(suite.load(layer)) for layer in suite.layers} if suite is not None else {}
    return harvest(loaded, docs, out, saes=saes, layers=layers if suite is None else None,
                   block_len=block_len, threshold=threshold, batch_size=batch_size,
                   shard_blocks=batch_size * shard_batches, max_blocks=max_blocks,
                   max_blocks_per_doc=max_blocks_per_doc, store_activations=store_activations,
                   corpus_name=f"{corpus}:{split}:{held_out}:{seed}:{order}")
