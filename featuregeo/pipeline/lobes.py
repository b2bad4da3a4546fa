"""Lobes pipeline: lobes for every SAE layer of a harvest, one sub-directory per layer (resumable)."""

from __future__ import annotations

from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.pipeline.common import log
import time


def run(source: str, harvest_dir: str, out: Path, layers=None, *, affinities=None, n_clusters=None,
                      n_permutations: int = 100, logreg_null_repeats: int = 20, heldout_fraction: float = 0.2,
                      seed: int = 0) -> dict:
    """Lobes for every SAE layer of a harvest (or ``layers``); one sub-directory per layer. Resumes."""
    import json

    from featuregeo.pl import lobes as plot_lobes
    from featuregeo.io.harvest import Harvest
    from featuregeo.io import open_suite
    from featuregeo.tl.lobes import AFFINITIES, DEFAULT_N_CLUSTERS, LobeResult, lobes_from_harvest

    h = Harvest(harvest_dir)
    layers = layers or h.sae_layers
    missing = [L for L in layers if L not in h.sae_layers]
    if missing:
        raise InputError(f"--layers: {missing} have no firing in {harvest_dir}; expected some of {h.sae_layers}")
    suite = open_suite(source, layers)
    kw = dict(affinities=tuple(affinities or AFFINITIES), n_clusters=tuple(n_clusters or DEFAULT_N_CLUSTERS),
              n_permutations=n_permutations, logreg_null_repeats=logreg_null_repeats)
    results = {}
    for layer in layers:
        d = out / f"layer_{layer}"
        stamp = json.dumps({**kw, "heldout_fraction": heldout_fraction, "seed": seed, "source": source,
                            "harvest": h.manifest.get("fingerprint")}, sort_keys=True, default=str)
        if (d / "lobes.json").exists() and (d / ".params").exists() and (d / ".params").read_text() == stamp:
            log(f"lobes layer {layer}: reused {d}")
            results[layer] = LobeResult.read(d)
            continue
        cloud = suite.load(layer)
        t0 = time.perf_counter()
        res = lobes_from_harvest(h, layer, cloud, heldout_fraction=heldout_fraction, seed=seed, **kw)
        res.write(d)
        plot_lobes.plot_all(res, d)
        (d / ".params").write_text(stamp)
        log(f"lobes layer {layer}: {time.perf_counter() - t0:.0f}s -> {d}")
        results[layer] = res
    return results


