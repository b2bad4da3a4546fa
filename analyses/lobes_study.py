"""Lobes study on a large held-out sample: >= 4,096 blocks of 256 tokens at every layer of the default suite.

The demo's lobes verdict rests on a few hundred short blocks; this study is the basis of the verdict.
Two resumable stages:

1. harvest: which default-suite features fire in each of ``--blocks`` complete 256-token blocks of
   the built-in corpus's held-out split (the documents no SAE was trained on; genres interleaved,
   at most ``--max-blocks-per-doc`` blocks per document), every layer, one forward pass per batch
   (``featuregeo.pipeline.harvest``; the harvest directory is its own checkpoint);
2. lobes: per layer, co-occurrence lobes vs decoder-geometry lobes (AMI against a permutation null,
   logistic regression over repeated splits against random geometries, held-out genre x lobe
   tables with permutation p-values; ``featuregeo.pipeline.lobes``, one checkpoint unit per layer).

Small result tables go to ``--results`` (committed): ``lobes_study.csv`` (every layer x affinity x
n_clusters record, the columns of ``LobesResult.rows()``) and ``lobes_study.json`` (the harvest's
size and genre counts, the parameters, and the per-layer summary at the headline settings).
The harvest and the full outputs stay in ``--work`` (not committed).

    nice -n 19 python analyses/lobes_study.py [--work DIR] [--blocks 4096] [--layers L,...]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time
from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_json, parse_layers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analyses" / "results" / "lobes_study"
HEADLINE = (("phi", 2), ("phi", 8), ("jaccard", 8))


def stage_harvest(args):
    from featuregeo.io.harvest import HarvestParams
    from featuregeo.io.models import load_model, set_threads
    from featuregeo.pipeline import harvest as harvest_pipeline

    set_threads(args.threads)
    params = HarvestParams(block_len=256, batch_size=16, shard_blocks=64, max_blocks=args.blocks,
                           max_blocks_per_doc=args.max_blocks_per_doc)
    t0 = time.perf_counter()
    h = harvest_pipeline.run("default", args.work / "harvest", params, model=load_model("default"), corpus="builtin",
                             split="heldout", held_out=0.1, order="interleave", seed=0, layers=args.layers)
    print(f"harvest: {h.n_blocks} blocks in {time.perf_counter() - t0:.0f}s", flush=True)
    return h


def lobes_params(args):
    from featuregeo.tl.lobes import LobesParams

    return LobesParams(n_clusters=(2, 3, 4, 8, 16, 32, 64), n_permutations=args.permutations,
                       logreg_null_repeats=10, logreg_split_repeats=10, genre_permutations=1000,
                       heldout_fraction=0.25, n_threads=args.threads, seed=args.seed)


def stage_lobes(args, harvest):
    from featuregeo.pipeline import lobes as lobes_pipeline

    t0 = time.perf_counter()
    res = lobes_pipeline.run("default", args.work / "harvest", args.work / "lobes", lobes_params(args),
                             layers=args.layers, figures=False)
    print(f"lobes: {len(res.layers)} layers in {time.perf_counter() - t0:.0f}s", flush=True)
    return res


def write_tables(args, harvest, res) -> None:
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    rows = res.rows()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    tmp = out / "lobes_study.csv.partial"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    os.replace(tmp, out / "lobes_study.csv")
    blocks = harvest.blocks()
    summary = {}
    for layer in res.layers:
        per = {}
        for aff, k in HEADLINE:
            try:
                r = layer.record(aff, k)
            except InputError:  # that n_clusters was skipped (not below the usable features)
                continue
            per[f"{aff}_{k}"] = {"ami": r.ami, "ami_sigma": r.ami_sigma, "ami_p": r.ami_p,
                                 "logreg_bal_acc": r.logreg_bal_acc, "logreg_bal_acc_sd": r.logreg_bal_acc_sd,
                                 "logreg_null_mean": r.logreg_null_mean, "logreg_sigma": r.logreg_sigma,
                                 "logreg_p": r.logreg_p, "genre_cramers_v": r.genre_cramers_v,
                                 "genre_p": r.genre_p, "genre_p_method": r.genre_p_method,
                                 "genre_min_expected": r.genre_min_expected}
        summary[str(layer.layer)] = {"usable_features": layer.n_usable, "train_blocks": layer.n_blocks,
                                     "heldout_blocks": layer.n_blocks_heldout, **per}
    atomic_write_json(out / "lobes_study.json", {
        "what": "featuregeo lobes on held-out blocks of the built-in corpus, default suite, every layer "
                "(analyses/lobes_study.py)",
        "blocks": harvest.n_blocks, "block_len": 256,
        "genre_blocks": dict(collections.Counter(map(str, blocks["genre"]))),
        "documents": int(len(set(blocks["doc_id"].tolist()))),
        "params": lobes_params(args).to_dict(), "harvest_fingerprint": harvest.fingerprint,
        "csv_columns": cols, "layers": summary})
    print(f"wrote {out / 'lobes_study.csv'} and {out / 'lobes_study.json'}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("FEATUREGEO_WORK", "/tmp/featuregeo-lobes-study")))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--stage", choices=["all", "harvest", "lobes"], default="all")
    ap.add_argument("--layers", help="default: every layer of the default suite")
    ap.add_argument("--blocks", type=int, default=4096)
    ap.add_argument("--max-blocks-per-doc", type=int, default=16)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.layers is None:
        from featuregeo.io import open_suite

        args.layers = list(open_suite("default").layers)
    else:
        args.layers = parse_layers(args.layers)
    args.work.mkdir(parents=True, exist_ok=True)
    harvest = stage_harvest(args)
    if harvest.n_blocks < args.blocks:
        print(f"note: the held-out split holds only {harvest.n_blocks} blocks (< {args.blocks})", flush=True)
    if args.stage in ("all", "lobes"):
        res = stage_lobes(args, harvest)
        write_tables(args, harvest, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
