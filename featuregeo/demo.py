"""``featuregeo demo``: the main analyses on the embedded default — the SAE suite shipped with
featuregeo (trained on Gemma 3 270M), the real model and the built-in offline corpus.

Stages, each through its pipeline (so each resumes): galaxy on every shipped layer against the
spectrum of the model's raw residual activations on held-out text; a harvest of held-out blocks;
lobes and atoms at an early, a middle and a late layer; the layer comparison with its pruning check;
the atlas.  ``DIR/summary.json`` is rewritten after every stage.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featuregeo.core.util import atomic_write_bytes, atomic_write_json
from featuregeo.pipeline.common import log, output_dir

LOBE_LAYERS = (3, 9, 15)  # early, middle, late


def heldout_activations(model, layers, *, n_blocks: int = 24, block_len: int = 256, seed: int = 0) -> dict[int, np.ndarray]:
    """Raw residual activations (float32) of ``model`` on held-out built-in text, genres balanced."""
    from featuregeo.io.corpus import blocks, builtin_corpus
    from featuregeo.io.models import residual_stream

    _, held = builtin_corpus().split(0.1, seed=seed)
    by = {g: list(held.by_genre(g)) for g in held.genres}
    per = max(1, n_blocks // max(1, len(by)))
    rows = []
    for g in sorted(by):
        rows += [b.input_ids for b in blocks(by[g], model.tokenizer, block_len, add_bos=True, max_blocks=per,
                                             max_blocks_per_doc=2)]
    acts = residual_stream(model, rows, list(layers), batch_size=8, seq_len=None, add_bos=False, drop_bos=True)
    return {L: np.asarray(a.reshape(-1, a.shape[-1]), dtype=np.float32) for L, a in acts.items()}


def _f(x: Any, p: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{p}f}"


def _galaxy_summary(result, out: Path) -> dict:
    recs = result.layers
    steep = min(recs, key=lambda r: r.slope)
    steeper = sum(1 for r in recs if r.activation_slope is not None and r.slope < r.activation_slope)
    nulls = [r.null_slope for r in recs if r.null_slope is not None]
    return {
        "dir": str(out),
        "records": [{"layer": r.layer, "n_features": r.n_features, "slope": r.slope, "slope_corrected": r.slope_corrected,
                     "slope_ci": list(r.slope_ci),
                     "null_slope": r.null_slope, "activation_slope": r.activation_slope,
                     "entropy_excess": None if r.entropy is None else r.entropy.excess} for r in recs],
        "steepest_layer": steep.layer, "steepest_slope": steep.slope,
        "layers_steeper_than_activations": steeper,
        "mean_null_slope": float(np.mean(nulls)) if nulls else None,
        "figures": sorted(str(p) for p in out.glob("galaxy_*.png")),
    }


def _lobes_summary(result) -> dict:
    out = {}
    for layer in result.layers:
        row = {}
        for k in (2, 3):
            x = next((r for r in layer.records if r.affinity == "phi" and r.n_clusters == k), None)
            if x is not None:
                row[f"phi_{k}"] = {key: getattr(x, key, None) for key in (
                    "ami", "ami_sigma", "ami_p", "logreg_bal_acc", "logreg_null_mean", "genre_cramers_v",
                    "genre_majority")}
        out[layer.layer] = row
    return out


def _atoms_summary(layer) -> dict:
    raw = layer.best("raw")
    ldas = [m for m in layer.methods if m.method == "lda"]
    lda = max(ldas, key=lambda m: m.n_components) if ldas else None
    pcr = layer.best("pc_removed")
    r_chars = np.asarray(layer.distractors.r_chars, dtype=float)
    n_cr = 0 if layer.crystals is None else int(layer.crystals.n_matches)
    row = {
        "analogy": {"raw": getattr(raw, "analogy_accuracy", None), "lda": getattr(lda, "analogy_accuracy", None),
                    "pc_removed": getattr(pcr, "analogy_accuracy", None)},
        "silhouette": {"raw": getattr(raw, "silhouette", None), "lda": getattr(lda, "silhouette", None)},
        "lda_components": getattr(lda, "n_components", None),
        "pc1_r_chars": float(r_chars[0]) if r_chars.size and np.isfinite(r_chars[0]) else None,
        "crystals": n_cr,
    }
    row["line"] = (f"held-out analogy raw {_f(row['analogy']['raw'], 2)}, LDA({row['lda_components']}) "
                   f"{_f(row['analogy']['lda'], 2)}, top PCs removed {_f(row['analogy']['pc_removed'], 2)}; "
                   f"silhouette {_f(row['silhouette']['raw'], 2)} -> {_f(row['silhouette']['lda'], 2)}; PC1 vs length r "
                   f"{_f(row['pc1_r_chars'], 2)}; {n_cr} crystals")
    return row


def _layers_summary(result) -> dict:
    pr = result.pruning
    one = [r for r in (pr.table if pr else []) if r.n_drop == 1]
    rand = [r.loss for r in (pr.random if pr else []) if r.n_drop == 1]
    return {
        "most_redundant": {m: (v[0].block if v else None) for m, v in result.redundancy.items()},
        "baseline_loss": pr.baseline if pr else None,
        "loss_after_one_drop": {r.method: r.loss for r in one},
        "random_one_drop_median": float(np.median(rand)) if rand else None,
    }


def run_demo(out: str | Path, *, fast: bool = False, source: str = "default", layers: Sequence[int] | None = None,
             model=None) -> int:
    """Galaxy, harvest, lobes, atoms, layers and the atlas on the shipped default; writes ``out/summary.json``.

    ``model`` (a LoadedModel) skips loading the default model (tests pass their session model).
    """
    from featuregeo.io import open_suite
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.io.harvest import HarvestParams
    from featuregeo.io.models import load_model
    from featuregeo.pipeline import atlas as atlas_pipeline
    from featuregeo.pipeline import atoms as atoms_pipeline
    from featuregeo.pipeline import galaxy as galaxy_pipeline
    from featuregeo.pipeline import harvest as harvest_pipeline
    from featuregeo.pipeline import layers as layers_pipeline
    from featuregeo.pipeline import lobes as lobes_pipeline
    from featuregeo.atlas import AtlasParams
    from featuregeo.tl.galaxy import GalaxyParams
    from featuregeo.tl.layers import LayersParams
    from featuregeo.tl.lobes import LobesParams

    t0 = time.perf_counter()
    suite = open_suite(source, list(layers) if layers is not None else None)  # bad layers fail here, first
    out = output_dir(out)
    layers = suite.layers
    focus = [L for L in LOBE_LAYERS if L in layers] or layers[-1:]
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"source": source, "layers": layers, "seconds": timings}

    def save() -> None:
        timings["total"] = time.perf_counter() - t0
        atomic_write_json(out / "summary.json", summary)

    # galaxy: decoder spectra against an isotropic null and the model's raw activations
    log(f"demo: {len(layers)} layers of the shipped SAE suite; reading raw activations of the default model "
        "on held-out text for comparison")
    model = model or load_model("default")
    t = time.perf_counter()
    acts_path = out / "heldout_activations.npz"
    if not acts_path.exists():
        acts = heldout_activations(model, layers, n_blocks=12 if fast else 24)
        buf = io.BytesIO()
        np.savez(buf, **{f"layer_{L}": a for L, a in acts.items()})
        atomic_write_bytes(acts_path, buf.getvalue())
        del acts, buf
    galaxy_dir = out / "galaxy"
    gal = galaxy_pipeline.run(source, galaxy_dir, GalaxyParams(entropy_repeats=3 if fast else 10, slope_bootstrap=20 if fast else 50), layers=layers,
                              activations=acts_path)
    summary["galaxy"] = _galaxy_summary(gal, galaxy_dir)
    timings["galaxy"] = time.perf_counter() - t
    save()

    # lobes: co-firing on held-out text, clustered, and tested against the decoder geometry
    t = time.perf_counter()
    log("demo: harvesting which features fire in held-out blocks of the built-in corpus")
    _, held = builtin_corpus().split(0.1, seed=0)
    hv = harvest_pipeline.run(source, out / "harvest",
                              HarvestParams(block_len=128, batch_size=16, shard_blocks=64,
                                            max_blocks=96 if fast else 384, max_blocks_per_doc=2),
                              model=model, corpus=held.interleaved(), split="all", order="corpus", layers=layers)
    ks = (2, 3, 4, 8, 16) if fast else (2, 3, 4, 8, 16, 32, 64)
    lob = lobes_pipeline.run(source, out / "harvest", out / "lobes",
                             LobesParams(n_clusters=ks, n_permutations=20 if fast else 100,
                                         logreg_null_repeats=3 if fast else 10, heldout_fraction=0.25,
                                         logreg_split_repeats=2 if fast else 3,
                                         genre_permutations=200 if fast else 1000,
                                         affinities=("phi", "jaccard") if fast else LobesParams().affinities),
                             layers=focus)
    summary["harvest"] = {"dir": str(out / "harvest"), "blocks": hv.n_blocks, "layers": hv.sae_layers}
    summary["lobes"] = {"dir": str(out / "lobes"), "layers": _lobes_summary(lob)}
    timings["harvest_and_lobes"] = time.perf_counter() - t
    save()

    # atoms: function vectors of word pairs (LDA scored on held-out pairs) and crystals among SAE features
    t = time.perf_counter()
    log(f"demo: atoms at layers {focus}")
    atoms = atoms_pipeline.run(model, focus, out / "atoms", sae=source, fast=True)
    summary["atoms"] = {"dir": str(out / "atoms"), "layers": {x.layer: _atoms_summary(x) for x in atoms.layers}}
    timings["atoms"] = time.perf_counter() - t
    save()

    # layers: similarity of every pair of layers, SAE feature matching, and the pruning check
    t = time.perf_counter()
    log("demo: comparing layers")
    extra = {} if fast else {"loss_blocks": 8, "loss_block_len": 128, "random_drops": 3}
    lay = layers_pipeline.run(model, out / "layers", LayersParams.fast(**extra), sae=suite,
                              galaxy=str(galaxy_dir / "galaxy.json"))
    summary["layers_comparison"] = {"dir": str(out / "layers"), **_layers_summary(lay)}
    timings["layers"] = time.perf_counter() - t
    save()

    # atlas: everything above on one browsable map
    t = time.perf_counter()
    log("demo: writing the feature atlas")
    atlas_pipeline.run(source, out / "atlas", layers=layers, params=AtlasParams(layout="pca"), lobes=out / "lobes",
                       atoms=out / "atoms", galaxy=galaxy_dir, harvest=out / "harvest",
                       figures={"layers": out / "layers"})
    summary["atlas"] = str(out / "atlas" / "index.html")
    timings["atlas"] = time.perf_counter() - t
    save()
    _print_summary(summary, gal, out)
    return 0


def _print_summary(summary: dict, gal, out: Path) -> None:
    recs = gal.layers
    g = summary["galaxy"]
    print()
    print(f"featuregeo demo — {len(recs)} layers, {recs[0].n_features} features x d_model {recs[0].d_model} per layer")
    print(f"  galaxy: decoder spectra are power laws with slopes {min(r.slope for r in recs):.3f} .. "
          f"{max(r.slope for r in recs):.3f} (steepest at layer {g['steepest_layer']}); isotropic null "
          f"{_f(g['mean_null_slope'])}; steeper than raw activations in {g['layers_steeper_than_activations']}/{len(recs)} layers")
    ex = [r.entropy.excess for r in recs if r.entropy is not None and r.entropy.excess is not None]
    if ex:
        print(f"  clustering entropy beyond the strongest unclustered null: {min(ex):.1f} .. {max(ex):.1f} nats")
    for layer, row in summary["lobes"]["layers"].items():
        x = row.get("phi_2") or {}
        if x:
            print(f"  lobes layer {layer}: 2 phi lobes vs geometry AMI {_f(x['ami'])} (sigma {_f(x['ami_sigma'], 1)}); "
                  f"lobe -> genre Cramer's V {_f(x['genre_cramers_v'], 2)}, majority {x['genre_majority']}")
    for layer, row in summary["atoms"]["layers"].items():
        print(f"  atoms layer {layer}: {row['line']}")
    lc = summary["layers_comparison"]
    rand = lc["random_one_drop_median"]
    print(f"  layers: most redundant block by measure {lc['most_redundant']}; held-out loss {_f(lc['baseline_loss'])} "
          f"-> after dropping it {', '.join(f'{k} {v:.3f}' for k, v in lc['loss_after_one_drop'].items())}"
          + (f" (random drop median {rand:.3f})" if rand else ""))
    for fig in g["figures"]:
        print(f"  figure: {fig}")
    print(f"  atlas: {summary['atlas']}  (open it in a browser)")
    print(f"  summary: {out / 'summary.json'}  ({summary['seconds']['total']:.0f}s)")
