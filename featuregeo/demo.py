"""``featuregeo demo``: the main analyses on the embedded default — the SAE suite shipped with
featuregeo (trained on Gemma 3 270M), the real model and the built-in offline corpus.

Galaxy scale on every shipped layer, with the spectrum of the model's raw residual activations on
held-out text of the built-in corpus as the comparison the paper makes.  Writes ``DIR/summary.json``
and the figures, and prints a short summary with their paths.
"""

from __future__ import annotations


import sys
import time
from pathlib import Path

import numpy as np

from ._util import atomic_write_json


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def heldout_activations(layers, *, n_blocks: int = 24, block_len: int = 256, seed: int = 0,
                        model=None) -> dict[int, np.ndarray]:
    """Raw residual activations (float32) of the default model on held-out built-in text, genres interleaved."""
    from .corpus import blocks, builtin_corpus
    from .models import load_model, residual_stream

    model = model or load_model("default")
    _, held = builtin_corpus().split(0.1, seed=seed)
    by = {g: list(held.by_genre(g)) for g in held.genres}
    per = max(1, n_blocks // max(1, len(by)))
    rows = []
    for g in sorted(by):
        rows += [b.input_ids for b in blocks(by[g], model.tokenizer, block_len, add_bos=True, max_blocks=per,
                                             max_blocks_per_doc=2)]
    acts = residual_stream(model, rows, list(layers), batch_size=8, seq_len=None, add_bos=False, drop_bos=True)
    return {L: np.asarray(a.reshape(-1, a.shape[-1]), dtype=np.float32) for L, a in acts.items()}


LOBE_LAYERS = (3, 9, 15)  # early, middle, late


def demo_harvest(out: Path, layers, *, fast: bool = False, seed: int = 0, model=None):
    """Which shipped-SAE features fire in held-out blocks of the built-in corpus (genres interleaved)."""
    from .corpus import builtin_corpus
    from .harvest import harvest
    from .io import open_suite
    from .io.saelens import load_sae
    from .models import load_model

    suite = open_suite("default", layers)
    saes = {L: load_sae(suite.load(L)) for L in suite.layers}
    _, held = builtin_corpus().split(0.1, seed=seed)
    n_blocks = 96 if fast else 384
    return harvest(model or load_model("default"), held.interleaved(), out, saes=saes, block_len=128, batch_size=16,
                   shard_blocks=64, max_blocks=n_blocks, max_blocks_per_doc=2, progress=False,
                   corpus_name=f"builtin:heldout:0.1:{seed}:interleave")


def demo_lobes(harvest_dir: Path, out: Path, layers, *, fast: bool = False, seed: int = 0) -> dict:
    """Lobes at an early, a middle and a late shipped layer, on the demo harvest."""
    from .cli import run_lobes_command

    ks = (2, 3, 4, 8, 16) if fast else (2, 3, 4, 8, 16, 32, 64)
    return run_lobes_command("default", str(harvest_dir), out, list(layers), n_clusters=ks,
                             n_permutations=20 if fast else 100, logreg_null_repeats=3 if fast else 10,
                             heldout_fraction=0.25, seed=seed)


def _lobe_summary(res) -> dict:
    out = {}
    for layer, r in res.items():
        recs = {(x["affinity"], x["n_clusters"]): x for x in r.records}
        row = {}
        for k in (2, 3):
            x = recs.get(("phi", k))
            if x:
                row[f"phi_{k}"] = {key: x.get(key) for key in ("ami", "ami_sigma", "ami_p", "logreg_bal_acc",
                                                             "logreg_null_mean", "genre_cramers_v", "genre_majority")}
        out[layer] = row
    return out


def run_demo(out: Path, *, fast: bool = False, source: str = "default", layers=None) -> int:
    from .cli import run_galaxy_command
    from .galaxy import GalaxyParams
    from .io import open_suite

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suite = open_suite(source, layers)
    layers = suite.layers
    _log(f"demo: {len(layers)} layers of the shipped SAE suite; reading raw activations of the default model "
         "on held-out text for comparison")
    acts = heldout_activations(layers, n_blocks=12 if fast else 24)
    acts_path = out / "heldout_activations.npz"
    np.savez(acts_path, **{f"layer_{L}": a for L, a in acts.items()})
    params = GalaxyParams(entropy_repeats=3 if fast else 10)
    galaxy_dir = out / "galaxy"
    res = run_galaxy_command(source, layers, galaxy_dir, params, activations=str(acts_path), reference=True)
    result = res["result"]
    recs = result.layers
    steep = min(recs, key=lambda r: r.slope)
    steeper = sum(1 for r in recs if r.activation_slope is not None and r.slope < r.activation_slope)
    summary = {
        "source": source,
        "layers": layers,
        "galaxy": {
            "records": result.records(),
            "steepest_layer": steep.layer,
            "steepest_slope": steep.slope,
            "layers_steeper_than_activations": steeper,
            "mean_null_slope": float(np.mean([r.null_slope for r in recs if r.null_slope is not None])),
        },
        "figures": {k: str(v) for k, v in res["paths"].items() if k.startswith("fig_")},
        "tables": {k: str(v) for k, v in res["paths"].items() if not k.startswith("fig_")},
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / "summary.json", summary)

    # lobes: co-firing on held-out text, clustered, and tested against the decoder geometry
    t1 = time.perf_counter()
    _log("demo: harvesting which features fire in held-out blocks of the built-in corpus")
    h = demo_harvest(out / "harvest", layers, fast=fast)
    lobe_layers = [L for L in LOBE_LAYERS if L in layers] or layers[-1:]
    lobes = demo_lobes(out / "harvest", out / "lobes", lobe_layers, fast=fast)
    summary["harvest"] = {"dir": str(out / "harvest"), "blocks": h.n_blocks, "layers": h.sae_layers}
    summary["lobes"] = {"dir": str(out / "lobes"), "layers": _lobe_summary(lobes),
                        "seconds": time.perf_counter() - t1}
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", summary)
    print()
    print(f"featuregeo demo — {len(layers)} layers, {recs[0].n_features} features x d_model {recs[0].d_model} per layer")
    print(f"  galaxy: decoder spectra are power laws with slopes {min(r.slope for r in recs):.3f} .. "
          f"{max(r.slope for r in recs):.3f} (steepest at layer {steep.layer}); isotropic null "
          f"{summary['galaxy']['mean_null_slope']:.3f}; steeper than raw activations in {steeper}/{len(recs)} layers")
    ex = [r.entropy["excess"] for r in recs if r.entropy]
    if ex:
        print(f"  clustering entropy beyond a same-spectrum Gaussian: {min(ex):.1f} .. {max(ex):.1f} nats")
    for layer, row in summary["lobes"]["layers"].items():
        x = row.get("phi_2") or {}
        if x:
            print(f"  lobes layer {layer}: 2 phi lobes vs geometry AMI {x['ami']:.3f} (sigma {x['ami_sigma']:.1f}); "
                  f"lobe -> genre Cramer's V {x['genre_cramers_v'] if x['genre_cramers_v'] is None else round(x['genre_cramers_v'], 2)}"
                  f", majority {x['genre_majority']}")
    print(f"  lobes: {summary['lobes']['dir']}")
    for k, v in summary["figures"].items():
        print(f"  figure: {v}")
    print(f"  summary: {out / 'summary.json'}  ({summary['seconds']:.0f}s)")

    return 0
