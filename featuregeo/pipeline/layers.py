"""Layers pipeline: cross-layer similarity, SAE matching and the pruning check for a model."""

from __future__ import annotations

from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log

LAYERS_FAST = {"n_blocks": 12, "block_len": 48, "loss_blocks": 4, "loss_block_len": 64, "prune_max": 2,
               "random_drops": 2, "null_assignment": False}


def run(model, out, *, sae: str | None = "default", fast: bool = False, seed: int = 0,
                       measures=None, galaxy: str | None = None, **kw) -> dict:
    """Layer comparison of ``model`` (a name or a LoadedModel); writes ``layers.json`` and figures to
    ``out``.  ``fast`` uses fewer blocks, prune-max 2, 2 random drops and no assignment null.  Extra
    keywords (n_blocks, block_len, loss_blocks, loss_block_len, prune_max, random_drops) override.
    Returns ``{"result": LayerResult, "paths": {...}}``; reruns reuse ``out/.layers_cache``."""
    from featuregeo.pl import layers as plot_layers
    from featuregeo.tl.layers import MEASURES, check_measures, run_layers
    from featuregeo.io.models import LoadedModel, load_model

    out = Path(out)
    measures = check_measures(measures or MEASURES)  # cheap checks before the model loads
    for name in ("prune_max", "random_drops", "n_blocks", "block_len", "loss_blocks", "loss_block_len"):
        v = kw.get(name)
        if v is not None and (not isinstance(v, int) or v < (0 if name in ("prune_max", "random_drops") else 1)):
            raise InputError(f"--{name.replace('_', '-')}: expected a {'non-negative' if name in ('prune_max', 'random_drops') else 'positive'} "
                       f"integer. Got {v!r} instead.")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    suite = None
    if sae and sae != "none":
        from featuregeo.io import open_suite

        suite = open_suite(sae)
    opts = {**(LAYERS_FAST if fast else {}), **{k: v for k, v in kw.items() if v is not None}}
    log(f"layers: {loaded.name} ({loaded.n_layers} blocks), SAE {sae} -> {out}")
    res = run_layers(loaded, out, sae=suite, measures=measures, galaxy=galaxy, seed=seed,
                     progress=log, **opts)
    paths = {"json": out / "layers.json", **plot_layers.plot_all(res, out)}
    return {"result": res, "paths": paths}


