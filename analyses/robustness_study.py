"""Robustness across SAEs: galaxy, lobes and atoms on SAEs of several widths and seeds at layers 3, 9, 15.

Every verdict of the findings report should carry its spread across SAEs trained by the same recipe.
This study trains, with the default suite's recipe (``analyses/build_default_suite.py``; same corpus,
same train / held-out split, same training blocks, and the shipped manifest's k, learning rate,
passes (1.25), batch, dead-feature window and AuxK coefficient at these layers), TopK SAEs at widths 1,024 / 2,048 / 4,096
(seed 0) and two more seeds (1, 2) at width 2,048; the width-2,048 seed-0 SAE is the shipped
default suite's.  The SAEs are kept under ``--work`` (not shipped, not committed); their manifests
(training records, FVU, dead fraction, checksums) are copied to ``--results``.

Stages (each resumable; rerun the same command to continue):

1. ``harvest`` — residual activations of the recipe's training blocks and 128 held-out blocks (for
   FVU) at the study layers (``build_default_suite.py --stage harvest``), then of the first
   ``--heldout-blocks`` held-out blocks of 256 tokens (genres interleaved, at most 16 per document;
   the same first blocks as ``analyses/lobes_study.py``) for the lobes;
2. ``train`` — every (width, seed) variant (``build_default_suite.py --stage train --suite-dir``);
3. ``analyze`` — per SAE: galaxy (``featuregeo.pipeline.galaxy``, default parameters), lobes on the
   held-out blocks (firing computed from the stored activations with that SAE's encoder, the
   harvest's rule: a feature fires in a block when its activation exceeds 1 on some token; then
   ``featuregeo.tl.lobes.analyze_firing`` with whole documents held out for the genre tables), atoms
   (``featuregeo.pipeline.atoms`` with the SAE space and crystals); each part is saved as
   ``--work/analyses/<sae>/<part>.json`` and reused on a rerun (``--parts`` picks the parts);
4. ``table`` — ``--results/statistics.csv`` (long format, one row per claim x statistic x SAE x
   layer: ``claim,statistic,width,seed,sae,layer,value``), ``statistics_summary.csv`` (per claim x
   statistic x layer over the SAEs: ``n_saes,mean,min,max,spread,values``), ``robustness.json``
   (both, with the description of every statistic and the list of finished / missing SAEs) and
   ``robustness.csv``: the findings report's robustness table (``claim,source,value,low,high``; one
   row per SAE and report claim, the claim's headline number over the study layers, plus the lobes
   study's rows when ``--lobes-study`` holds its json): ``featuregeo report OUT analyses/results/robustness``
   shows them as each claim's spread.  A copy ships as
   ``featuregeo/data/default_suite/robustness/robustness.csv``, which the demo's report reads.

    nice -n 19 python analyses/robustness_study.py [--work DIR] [--stage all|harvest|train|analyze|table]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from featuregeo.core.util import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analyses" / "results" / "robustness"
BUILD = ROOT / "analyses" / "build_default_suite.py"
LAYERS = (3, 9, 15)
VARIANTS = ((2048, 0), (1024, 0), (4096, 0), (2048, 1), (2048, 2))  # (width, seed); (2048, 0) is shipped

#: claim -> statistic -> what it is (the table's documentation)
STATISTICS = {
    "sae": {"fvu_excl_massive": "held-out FVU without the 8 largest-variance dims", "dead_fraction":
            "fraction of features that never fire on held-out tokens", "l0": "mean active features per token"},
    "galaxy": {
        "slope": "power-law slope of the decoder covariance spectrum, ranks 11-150",
        "slope_ci_low": "lower end of the slope's 95% interval", "slope_ci_high": "upper end",
        "slope_corrected": "slope corrected for the sample-size distortion (parametric simulation)",
        "curvature": "log-log quadratic coefficient over the window (0 for a power law)",
        "window_slope_min": "smallest slope over the sensitivity windows", "window_slope_max": "largest",
        "null_slope": "slope of an isotropic Gaussian cloud of the same shape",
        "entropy_difference": "Gaussian minus kNN entropy (nats)",
        "entropy_excess": "clustering entropy beyond the strongest unclustered null (nats)"},
    "lobes": {
        "ami_phi_{k}": "AMI of phi co-occurrence lobes vs decoder-geometry lobes, k clusters",
        "ami_sigma_phi_{k}": "(AMI - permutation-null mean) / null sd",
        "logreg_bal_acc_phi_{k}": "balanced accuracy predicting phi lobes from decoder rows (mean over splits)",
        "logreg_sigma_phi_{k}": "its distance from the random-geometry null, in sd of both",
        "genre_cramers_v_phi_{k}": "Cramer's V of held-out genre x lobe", "genre_p_phi_{k}": "its permutation p"},
    "atoms": {
        "crystals": "quadruples of decoder rows passing the crystal thresholds",
        "crystals_null": "the same search on a Gaussian cloud of the same mean and covariance",
        "sae_lda_analogy": "held-out analogy accuracy in the SAE space after LDA (validation-chosen k)",
        "sae_raw_analogy": "held-out analogy accuracy in the SAE space, raw"},
}
LOBE_KS = (2, 8, 16)
GEMMA3_270M_LAYERS = 18  # the report's relative depth is layer / number of layers


def sae_name(width: int, seed: int) -> str:
    return f"w{width}_s{seed}"


def suite_dir(args, width: int, seed: int) -> Path:
    return ROOT / "featuregeo" / "data" / "default_suite" if (width, seed) == (2048, 0) else \
        args.work / "suites" / sae_name(width, seed)


def build(args, *extra: str) -> None:
    cmd = [sys.executable, str(BUILD), "--work", str(args.work / "build"), "--layers",
           ",".join(map(str, args.layers)), "--threads", str(args.threads), *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def stage_harvest(args) -> None:
    """The recipe's harvest (training blocks; 128 held-out blocks for FVU), then the lobes' held-out blocks."""
    from featuregeo.io.harvest import HarvestParams
    from featuregeo.io.models import load_model, set_threads
    from featuregeo.pipeline import harvest as harvest_pipeline

    build(args, "--stage", "harvest")
    set_threads(args.threads)
    params = HarvestParams(block_len=256, batch_size=16, shard_blocks=64, max_blocks=args.heldout_blocks,
                           max_blocks_per_doc=16, store_activations=True, layers=tuple(args.layers))
    harvest_pipeline.run(None, args.work / "heldout_lobes", params, model=load_model("default"), corpus="builtin",
                         split="heldout", held_out=0.1, order="interleave", seed=0, layers=args.layers)


def recipe(args) -> list[str]:
    """The shipped suite's training settings at the study layers (from its manifest), as build options."""
    shipped = json.loads((suite_dir(args, 2048, 0) / "manifest.json").read_text())["layers"]
    keys = {"k": "--k", "lr": "--lr", "epochs": "--epochs", "batch": "--batch", "dead_feature_window": "--dead-window",
            "aux_loss_coefficient": "--aux-coef"}
    opts = []
    for key, flag in keys.items():
        vals = {shipped[str(L)][key] for L in args.layers}
        if len(vals) != 1:
            raise SystemExit(f"the shipped suite trained layers {args.layers} with different {key}: {vals}")
        opts += [flag, str(vals.pop())]
    return opts + ["--data-init", str(int(shipped[str(args.layers[0])]["data_init"]))]


def stage_train(args) -> None:
    for width, seed in args.variants:
        if (width, seed) == (2048, 0):
            continue
        build(args, "--stage", "train", "--width", str(width), "--seed", str(seed), *recipe(args),
              "--suite-dir", str(suite_dir(args, width, seed)))


def copy_manifests(args) -> None:
    out = args.results / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    for width, seed in args.variants:
        m = suite_dir(args, width, seed) / "manifest.json"
        if m.exists():
            shutil.copyfile(m, out / f"{sae_name(width, seed)}.json")


# ----------------------------------------------------------------------------------------------
# analyses of one SAE
# ----------------------------------------------------------------------------------------------
def heldout_firing(args, sae, layer: int):
    """(firing [blocks, d_sae] bool, doc_ids, genres) of the held-out blocks under ``sae``."""
    import torch

    from featuregeo.io.harvest import Harvest

    h = Harvest(args.work / "heldout_lobes")
    meta = h.blocks()
    n_blocks = h.n_blocks
    x = np.concatenate(list(h.activations(layer, scaled=False)))
    per = x.shape[0] // n_blocks
    if per * n_blocks != x.shape[0]:
        raise SystemExit(f"held-out activations: {x.shape[0]} tokens are not {n_blocks} blocks of equal length")
    fired = np.zeros((n_blocks, int(sae.cfg.d_sae)), dtype=bool)
    with torch.inference_mode():
        for b in range(0, n_blocks, 16):
            e = min(n_blocks, b + 16)
            f = sae.encode(torch.from_numpy(x[b * per:e * per])).numpy()
            fired[b:e] = (f.reshape(e - b, per, -1) > 1.0).any(axis=1)
    return fired, np.asarray(meta["doc_id"]), np.asarray(meta["genre"]).astype(str)


def lobes_params():
    from featuregeo.tl.lobes import LobesParams

    return LobesParams(affinities=("phi", "jaccard"), n_clusters=LOBE_KS, n_permutations=100,
                       logreg_null_repeats=10, logreg_split_repeats=5, genre_permutations=1000,
                       heldout_fraction=0.25)


def run_lobes(args, source: str, out: Path) -> dict:
    """Lobes per layer of one SAE; one json per layer under ``out`` (reused)."""
    from featuregeo.io import open_suite
    from featuregeo.io.saelens import load_sae
    from featuregeo.tl.lobes import analyze_firing

    suite = open_suite(source, list(args.layers))
    res = {}
    for layer in args.layers:
        path = out / f"lobes_layer_{layer}.json"
        if path.exists():
            res[layer] = json.loads(path.read_text())
            continue
        cloud = suite.load(layer)
        firing, docs, genres = heldout_firing(args, load_sae(cloud), layer)
        rec = analyze_firing(firing, cloud, lobes_params(), doc_ids=docs, genres=genres, layer=layer)
        row = {}
        for k in rec.n_clusters:
            r = rec.record("phi", k)
            row.update({f"ami_phi_{k}": r.ami, f"ami_sigma_phi_{k}": r.ami_sigma,
                        f"logreg_bal_acc_phi_{k}": r.logreg_bal_acc, f"logreg_sigma_phi_{k}": r.logreg_sigma,
                        f"genre_cramers_v_phi_{k}": r.genre_cramers_v, f"genre_p_phi_{k}": r.genre_p})
        row["_blocks"] = int(firing.shape[0])
        atomic_write_json(path, row)
        res[layer] = row
        print(f"  lobes layer {layer}: {json.dumps({k: v for k, v in row.items() if 'phi_2' in k})}", flush=True)
    return res


def run_galaxy(args, source: str, out: Path) -> dict:
    from featuregeo.pipeline import galaxy as galaxy_pipeline
    from featuregeo.tl.galaxy import GalaxyParams

    res = galaxy_pipeline.run(source, out / "galaxy", GalaxyParams(seed=args.seed), layers=list(args.layers),
                              reference=False, progress=None)
    rows = {}
    for r in res.layers:
        e = r.entropy
        rows[r.layer] = {"slope": r.slope, "slope_ci_low": r.slope_ci[0], "slope_ci_high": r.slope_ci[1],
                         "slope_corrected": getattr(r, "slope_corrected", None), "curvature": r.curvature,
                         "window_slope_min": r.window_slope_range[0] if r.window_slope_range else None,
                         "window_slope_max": r.window_slope_range[1] if r.window_slope_range else None,
                         "null_slope": r.null_slope, "entropy_difference": None if e is None else e.difference,
                         "entropy_excess": None if e is None else e.excess}
    return rows


def run_atoms(args, source: str, out: Path, model) -> dict:
    from featuregeo.pipeline import atoms as atoms_pipeline
    from featuregeo.tl.atoms import AtomsParams

    res = atoms_pipeline.run(model, list(args.layers), out / "atoms", AtomsParams(sae_space=True, seed=args.seed),
                             sae=source, plots=False, progress=None)
    rows = {}
    for rec in res.layers:
        sae_methods = rec.sae_space.methods if rec.sae_space is not None else []
        from featuregeo.tl.atoms.projections import best_score

        lda = best_score(sae_methods, "lda") if sae_methods else None
        raw = next((m for m in sae_methods if m.method == "raw"), None)
        rows[rec.layer] = {"crystals": None if rec.crystals is None else rec.crystals.n_matches,
                           "crystals_null": None if rec.crystal_null is None else rec.crystal_null.n_matches,
                           "sae_lda_analogy": None if lda is None else lda.analogy_accuracy,
                           "sae_raw_analogy": None if raw is None else raw.analogy_accuracy}
    return rows


PARTS = ("galaxy", "lobes", "atoms")


def stage_analyze(args) -> None:
    """Every requested part of every trained SAE, one ``<part>.json`` per SAE (reused on a rerun)."""
    from featuregeo.io.harvest import Harvest

    model = None
    for width, seed in args.variants:
        name = sae_name(width, seed)
        sd = suite_dir(args, width, seed)
        if not all((sd / f"layer_{L}").is_dir() for L in args.layers):
            print(f"{name}: not trained yet (run --stage train)", flush=True)
            continue
        out = args.work / "analyses" / name
        out.mkdir(parents=True, exist_ok=True)
        for part in args.parts:
            path = out / f"{part}.json"
            if path.exists():
                continue
            if part == "lobes":
                hv = args.work / "heldout_lobes"
                if not ((hv / "harvest.json").exists() and Harvest(hv).complete):
                    print(f"{name}: lobes wait for the held-out harvest (run --stage harvest)", flush=True)
                    continue
            t0 = time.perf_counter()
            source = str(sd)
            if part == "galaxy":
                rows = run_galaxy(args, source, out)
            elif part == "lobes":
                rows = run_lobes(args, source, out)
            else:
                if model is None:
                    from featuregeo.io.models import load_model

                    model = load_model("default")
                rows = run_atoms(args, source, out, model)
            atomic_write_json(path, {str(L): v for L, v in rows.items()})
            print(f"{name}: {part} done in {time.perf_counter() - t0:.0f}s", flush=True)


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
def _num(v):
    return float(v) if isinstance(v, (int, float)) and v is not None and np.isfinite(v) else None


def stage_table(args) -> None:
    copy_manifests(args)
    rows, finished, missing = [], [], []
    for width, seed in args.variants:
        name = sae_name(width, seed)
        man = suite_dir(args, width, seed) / "manifest.json"
        if man.exists():
            recs = json.loads(man.read_text())["layers"]
            for L in args.layers:
                if str(L) in recs:
                    for stat in STATISTICS["sae"]:
                        rows.append({"claim": "sae", "statistic": stat, "width": width, "seed": seed, "sae": name,
                                     "layer": L, "value": _num(recs[str(L)].get(stat))})
        for claim in PARTS:
            done = args.work / "analyses" / name / f"{claim}.json"
            if not done.exists():
                missing.append(f"{name}/{claim}")
                continue
            finished.append(f"{name}/{claim}")
            for L, vals in json.loads(done.read_text()).items():
                for stat, v in vals.items():
                    if not stat.startswith("_"):
                        rows.append({"claim": claim, "statistic": stat, "width": width, "seed": seed, "sae": name,
                                     "layer": int(L), "value": _num(v)})
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    cols = ["claim", "statistic", "width", "seed", "sae", "layer", "value"]
    _write_csv(out / "statistics.csv", cols, rows)
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["claim"], r["statistic"], r["layer"]), []).append(r)
    summ = []
    for (claim, stat, layer), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        v = np.array([r["value"] for r in rs if r["value"] is not None], dtype=float)
        summ.append({"claim": claim, "statistic": stat, "layer": layer, "n_saes": int(v.size),
                     "mean": float(v.mean()) if v.size else None, "min": float(v.min()) if v.size else None,
                     "max": float(v.max()) if v.size else None,
                     "spread": float(v.max() - v.min()) if v.size else None,
                     "values": json.dumps({r["sae"]: r["value"] for r in rs})})
    _write_csv(out / "statistics_summary.csv", list(summ[0]) if summ else ["claim"], summ)
    claims = report_rows(args, rows)
    _write_csv(out / "robustness.csv", ["claim", "source", "value", "low", "high"], claims)
    atomic_write_json(out / "robustness.json", {
        "what": "featuregeo robustness across SAEs (analyses/robustness_study.py)",
        "layout": {"statistics.csv": "long format, one row per claim x statistic x SAE x layer: " + ",".join(cols),
                   "statistics_summary.csv": "per claim x statistic x layer over SAEs: n_saes, mean, min, max, "
                                             "spread (= max - min), values (json: sae -> value)",
                   "robustness.csv": "the findings report's robustness table: claim,source,value,low,high (each "
                                     "SAE's headline number of a report claim over the study layers)"},
        "saes": {sae_name(w, s): {"width": w, "seed": s, "shipped": (w, s) == (2048, 0)} for w, s in args.variants},
        "finished": finished, "missing": missing, "layers": list(args.layers),
        "statistics": STATISTICS, "lobes_n_clusters": list(LOBE_KS),
        "heldout_blocks_for_lobes": args.heldout_blocks, "rows": rows, "summary": summ, "report_rows": claims})
    print(f"table: {len(rows)} rows from {finished}; missing {missing} -> {out}", flush=True)


#: report claim -> (claim, statistic) of the long table, how the per-layer values combine, what the row means
REPORT_CLAIMS = {
    "galaxy.power_law": ("galaxy", "slope_corrected", "median", "median bias-corrected slope"),
    "galaxy.layer_trend": ("galaxy", "slope_corrected", "steepest", "relative depth of the steepest layer (of 18)"),
    "galaxy.clustering_entropy": ("galaxy", "entropy_excess", "median", "median entropy excess (nats)"),
    "lobes.spatial": ("lobes", "ami_phi_2", "median", "median phi AMI at 2 lobes"),
    "lobes.genre": ("lobes", "genre_cramers_v_phi_2", "median", "median held-out genre Cramer's V, phi 2 lobes"),
    "atoms.lda": ("atoms", "sae_lda_gain", "median", "median LDA - raw analogy accuracy in the SAE space"),
    "atoms.crystals": ("atoms", "crystals", "sum", "crystals found"),
}


def report_rows(args, rows: list[dict]) -> list[dict]:
    """The findings report's robustness rows: per SAE and claim, its headline number over the study layers."""
    by = {}
    for r in rows:
        by.setdefault((r["sae"], r["claim"], r["statistic"]), {})[r["layer"]] = r["value"]
    for (sae, claim, stat), vals in list(by.items()):
        if (claim, stat) == ("atoms", "sae_lda_analogy"):
            raw = by.get((sae, "atoms", "sae_raw_analogy"), {})
            by[(sae, "atoms", "sae_lda_gain")] = {L: None if v is None or raw.get(L) is None else v - raw[L]
                                                   for L, v in vals.items()}
    out = []
    layers = "/".join(map(str, args.layers))
    for width, seed in args.variants:
        sae = sae_name(width, seed)
        for claim_id, (claim, stat, how, what) in REPORT_CLAIMS.items():
            per = {L: v for L, v in by.get((sae, claim, stat), {}).items() if v is not None}
            if len(per) != len(args.layers):
                continue
            vals = list(per.values())
            value = {"median": np.median(vals), "sum": np.sum(vals),
                     "steepest": min(per, key=per.get) / GEMMA3_270M_LAYERS}[how]
            shipped = " (shipped)" if (width, seed) == (2048, 0) else ""
            row = {"claim": claim_id, "source": f"SAE width {width} seed {seed}{shipped}, layers {layers}: {what}",
                   "value": float(value), "low": None, "high": None}
            if stat == "slope_corrected" and how == "median":  # slope_ci is centred on the corrected slope
                for end in ("low", "high"):
                    ci = [v for v in by.get((sae, claim, f"slope_ci_{end}"), {}).values() if v is not None]
                    row[end] = float(np.median(ci)) if len(ci) == len(vals) else None
            out.append(row)
    study = args.lobes_study / "lobes_study.json"
    if study.is_file():
        js = json.loads(study.read_text())
        per = [v.get("phi_2") for v in js["layers"].values() if isinstance(v.get("phi_2"), dict)]
        src = (f"lobes study: shipped SAEs, {len(per)} layers, {js['blocks']:,} held-out blocks of "
               f"{js['block_len']} tokens")
        for claim_id, key in (("lobes.spatial", "ami"), ("lobes.genre", "genre_cramers_v")):
            vals = [p[key] for p in per if p.get(key) is not None]
            if vals:
                out.append({"claim": claim_id, "source": f"{src}: median {key} at phi 2 lobes",
                            "value": float(np.median(vals)), "low": None, "high": None})
    return out


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("FEATUREGEO_WORK", "/tmp/featuregeo-robustness")))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--stage", choices=["all", "harvest", "train", "analyze", "table"], default="all")
    ap.add_argument("--layers", default=",".join(map(str, LAYERS)))
    ap.add_argument("--variants", default=",".join(f"{w}:{s}" for w, s in VARIANTS),
                    help="width:seed list; 2048:0 is the shipped default suite")
    ap.add_argument("--heldout-blocks", type=int, default=512, help="held-out blocks of 256 tokens for the lobes")
    ap.add_argument("--parts", default=",".join(PARTS), help="analyses to run: galaxy,lobes,atoms")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lobes-study", type=Path, default=RESULTS.parent / "lobes_study",
                    help="results of analyses/lobes_study.py, added to the report's robustness table")
    args = ap.parse_args(argv)
    args.layers = [int(x) for x in args.layers.split(",")]
    args.parts = [p for p in args.parts.split(",") if p]
    args.variants = [tuple(int(p) for p in v.split(":")) for v in args.variants.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "harvest"):
        stage_harvest(args)
    if args.stage in ("all", "train"):
        stage_train(args)
    if args.stage in ("all", "analyze"):
        stage_analyze(args)
    if args.stage in ("all", "table"):
        stage_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
