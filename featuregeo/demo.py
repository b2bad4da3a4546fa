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

from featuregeo.core.util import atomic_write_json


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def heldout_activations(layers, *, n_blocks: int = 24, block_len: int = 256, seed: int = 0,
                        model=None) -> dict[int, np.ndarray]:
    """Raw residual activations (float32) of the default model on held-out built-in text, genres interleaved."""
    from featuregeo.io.corpus import blocks, builtin_corpus
    from featuregeo.io.models import load_model, residual_stream

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
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.io.harvest import harvest
    from featuregeo.io import open_suite
    from featuregeo.io.saelens import load_sae
    from featuregeo.io.models import load_model

    suite = open_suite("default", layers)
    saes = {L: load_sae(suite.load(L)) for L in suite.layers}
    _, held = builtin_corpus().split(0.1, seed=seed)
    n_blocks = 96 if fast else 384
    return harvest(model or load_model("default"), held.interleaved(), out, saes=saes, block_len=128, batch_size=16,
                   shard_blocks=64, max_blocks=n_blocks, max_blocks_per_doc=2, progress=False,
                   corpus_name=f"builtin:heldout:0.1:{seed}:interleave")


def demo_lobes(harvest_dir: Path, out: Path, layers, *, fast: bool = False, seed: int = 0) -> dict:
    """Lobes at an early, a middle and a late shipped layer, on the demo harvest."""
    from featuregeo.pipeline import lobes as lobes_pipeline

    ks = (2, 3, 4, 8, 16) if fast else (2, 3, 4, 8, 16, 32, 64)
    return lobes_pipeline.run("default", str(harvest_dir), out, list(layers), n_clusters=ks,
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


def _atoms_summary(r: dict) -> dict:
    a = r["atoms"]
    raw = a.best("raw") or {}
    lda = max((m for m in a.methods if m["method"] == "lda"), key=lambda m: m["n_components"], default={})
    pcr = a.best("pc_removed") or {}
    c = r["crystals"]
    n_cr = len(c.crystals) if c is not None else 0
    row = {
        "analogy": {"raw": raw.get("analogy_accuracy"), "lda": lda.get("analogy_accuracy"),
                    "pc_removed": pcr.get("analogy_accuracy")},
        "silhouette": {"raw": raw.get("silhouette"), "lda": lda.get("silhouette")},
        "lda_components": lda.get("n_components"),
        "pc1_r_chars": a.distractors.get("pc1_r_chars"),
        "crystals": n_cr,
    }

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    row["line"] = (f"held-out analogy raw {f(row['analogy']['raw'])}, LDA({row['lda_components']}) "
                   f"{f(row['analogy']['lda'])}, top PCs removed {f(row['analogy']['pc_removed'])}; silhouette "
                   f"{f(row['silhouette']['raw'])} -> {f(row['silhouette']['lda'])}; PC1 vs length r "
                   f"{f(row['pc1_r_chars'])}; {n_cr} crystals")
    return row


def _layers_summary(res) -> dict:
    pr = res.pruning or {}
    table = pr.get("table", [])
    rand = [r for r in pr.get("random", []) if r.get("n_drop") == 1]
    return {
        "most_redundant": {m: (v[0]["block"] if v else None) for m, v in res.redundancy.items()},
        "baseline_loss": pr.get("baseline"),
        "loss_after_one_drop": {r["method"]: r["loss"] for r in table if r["n_drop"] == 1},
        "random_one_drop_median": float(np.median([r["loss"] for r in rand])) if rand else None,
    }


def run_demo(out: Path, *, fast: bool = False, source: str = "default", layers=None) -> int:
    """Galaxy, lobes, atoms, layers and the atlas on the shipped default; writes ``out/summary.json``."""
    from featuregeo.pipeline import atlas as atlas_pipeline
    from featuregeo.pipeline import atoms as atoms_pipeline
    from featuregeo.pipeline import galaxy as galaxy_pipeline
    from featuregeo.pipeline import layers as layers_pipeline
    from featuregeo.tl.galaxy import GalaxyParams
    from featuregeo.io import open_suite
    from featuregeo.io.models import load_model

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suite = open_suite(source, layers)
    layers = suite.layers
    timings: dict[str, float] = {}
    summary: dict = {"source": source, "layers": layers, "seconds": timings}

    def save() -> None:
        timings["total"] = time.perf_counter() - t0
        atomic_write_json(out / "summary.json", summary)

    # galaxy: decoder spectra against an isotropic null and the model's raw activations
    _log(f"demo: {len(layers)} layers of the shipped SAE suite; reading raw activations of the default model "
         "on held-out text for comparison")
    model = load_model("default")
    t = time.perf_counter()
    acts = heldout_activations(layers, n_blocks=12 if fast else 24, model=model)
    acts_path = out / "heldout_activations.npz"
    np.savez(acts_path, **{f"layer_{L}": a for L, a in acts.items()})
    del acts
    params = GalaxyParams(entropy_repeats=3 if fast else 10)
    galaxy_dir = out / "galaxy"
    res = galaxy_pipeline.run(source, layers, galaxy_dir, params, activations=str(acts_path), reference=True)
    result = res["result"]
    recs = result.layers
    steep = min(recs, key=lambda r: r.slope)
    steeper = sum(1 for r in recs if r.activation_slope is not None and r.slope < r.activation_slope)
    summary["galaxy"] = {
        "dir": str(galaxy_dir),
        "records": result.records(),
        "steepest_layer": steep.layer,
        "steepest_slope": steep.slope,
        "layers_steeper_than_activations": steeper,
        "mean_null_slope": float(np.mean([r.null_slope for r in recs if r.null_slope is not None])),
    }
    summary["figures"] = {k: str(v) for k, v in res["paths"].items() if k.startswith("fig_")}
    timings["galaxy"] = time.perf_counter() - t
    save()

    # lobes: co-firing on held-out text, clustered, and tested against the decoder geometry
    t = time.perf_counter()
    _log("demo: harvesting which features fire in held-out blocks of the built-in corpus")
    h = demo_harvest(out / "harvest", layers, fast=fast, model=model)
    focus = [L for L in LOBE_LAYERS if L in layers] or layers[-1:]
    lobes = demo_lobes(out / "harvest", out / "lobes", focus, fast=fast)
    summary["harvest"] = {"dir": str(out / "harvest"), "blocks": h.n_blocks, "layers": h.sae_layers}
    summary["lobes"] = {"dir": str(out / "lobes"), "layers": _lobe_summary(lobes)}
    timings["harvest_and_lobes"] = time.perf_counter() - t
    save()

    # atoms: function vectors of word pairs (LDA scored on held-out pairs) and crystals among SAE features
    t = time.perf_counter()
    _log(f"demo: atoms at layers {focus}")
    atoms = atoms_pipeline.run(model, focus, out / "atoms", sae=source, fast=True)
    summary["atoms"] = {"dir": str(out / "atoms"), "layers": {L: _atoms_summary(r) for L, r in atoms.items()}}
    timings["atoms"] = time.perf_counter() - t
    save()

    # layers: similarity of every pair of layers, SAE feature matching, and the pruning check
    t = time.perf_counter()
    _log("demo: comparing layers")
    lay = layers_pipeline.run(model, out / "layers", sae=source, fast=True, galaxy=str(galaxy_dir / "galaxy.json"),
                             **({} if fast else {"loss_blocks": 8, "loss_block_len": 128, "random_drops": 3}))
    summary["layers_comparison"] = {"dir": str(out / "layers"), **_layers_summary(lay["result"])}
    timings["layers"] = time.perf_counter() - t
    save()

    # atlas: everything above on one browsable map
    t = time.perf_counter()
    _log("demo: writing the feature atlas")
    atlas = atlas_pipeline.run(source, out / "atlas", layers=layers, lobes=out / "lobes", atoms=out / "atoms",
                              galaxy=galaxy_dir, harvest=out / "harvest", layout="pca")
    summary["atlas"] = str(atlas["index"])
    timings["atlas"] = time.perf_counter() - t
    save()

    g = summary["galaxy"]
    print()
    print(f"featuregeo demo — {len(layers)} layers, {recs[0].n_features} features x d_model {recs[0].d_model} per layer")
    print(f"  galaxy: decoder spectra are power laws with slopes {min(r.slope for r in recs):.3f} .. "
          f"{max(r.slope for r in recs):.3f} (steepest at layer {steep.layer}); isotropic null "
          f"{g['mean_null_slope']:.3f}; steeper than raw activations in {steeper}/{len(recs)} layers")
    ex = [r.entropy["excess"] for r in recs if r.entropy]
    if ex:
        print(f"  clustering entropy beyond a same-spectrum Gaussian: {min(ex):.1f} .. {max(ex):.1f} nats")
    for layer, row in summary["lobes"]["layers"].items():
        x = row.get("phi_2") or {}
        if x:
            v = x["genre_cramers_v"]
            print(f"  lobes layer {layer}: 2 phi lobes vs geometry AMI {x['ami']:.3f} (sigma {x['ami_sigma']:.1f}); "
                  f"lobe -> genre Cramer's V {'-' if v is None else f'{v:.2f}'}, majority {x['genre_majority']}")
    for layer, row in summary["atoms"]["layers"].items():
        print(f"  atoms layer {layer}: {row['line']}")
    lc = summary["layers_comparison"]
    print(f"  layers: most redundant block by measure {lc['most_redundant']}; held-out loss {lc['baseline_loss']:.3f} "
          f"-> after dropping it {', '.join(f'{k} {v:.3f}' for k, v in lc['loss_after_one_drop'].items())}"
          + (f" (random drop median {lc['random_one_drop_median']:.3f})" if lc["random_one_drop_median"] else ""))
    for k, v in summary["figures"].items():
        print(f"  figure: {v}")
    print(f"  atlas: {summary['atlas']}  (open it in a browser)")
    print(f"  summary: {out / 'summary.json'}  ({timings['total']:.0f}s)")
    return 0
