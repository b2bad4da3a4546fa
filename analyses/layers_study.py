"""Layer comparison on a real model: which similarity measure finds the blocks that can be dropped?

Runs ``featuregeo layers`` (cosine, linear CKA, StructLens UAS and tree edit distance; SAE matching
across the shipped suite; pruning check) and prints, per measure, the blocks it deems most redundant,
the held-out loss after dropping the n most redundant, the same against random drops (mean, std,
z-score), and the rank correlation between the measures' redundancy scores.  Resumable: a rerun
with the same settings reuses everything already computed in ``--out``.

    python analyses/layers_study.py --out layers-study [--loss-blocks 16] [--random-drops 5] [--fast]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--out", default="layers-study")
    ap.add_argument("--n-blocks", type=int, default=32)
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--loss-blocks", type=int, default=16)
    ap.add_argument("--loss-block-len", type=int, default=128)
    ap.add_argument("--prune-max", type=int, default=3)
    ap.add_argument("--random-drops", type=int, default=5)
    ap.add_argument("--no-null-assignment", action="store_true", help="skip the (slow) assignment under the null")
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from scipy.stats import spearmanr

    from featuregeo.pipeline import layers as layers_pipeline

    t0 = time.perf_counter()
    kw = {} if a.fast else dict(n_blocks=a.n_blocks, block_len=a.block_len, loss_blocks=a.loss_blocks,
                                loss_block_len=a.loss_block_len, prune_max=a.prune_max,
                                random_drops=a.random_drops, null_assignment=not a.no_null_assignment)
    res = layers_pipeline.run(a.model, Path(a.out), sae=a.sae, fast=a.fast, seed=a.seed, **kw)
    r = res["result"]
    out: dict = {"seconds": time.perf_counter() - t0, "params": r.params}
    print(f"\n== {r.model}: {r.data['n_tokens_similarity']} tokens for similarity ({r.params['n_blocks']} held-out "
          f"blocks of {r.params['block_len']})")
    print("most redundant blocks (sim of block input vs output):")
    for m, red in r.redundancy.items():
        print(f"  {m:>7}: " + ", ".join(f"{x['block']} ({x['score']:.3f})" for x in red[:5]))
    ms = list(r.redundancy)
    rho = {}
    for i, m1 in enumerate(ms):
        for m2 in ms[i + 1:]:
            s1 = {x["block"]: x["score"] for x in r.redundancy[m1]}
            s2 = {x["block"]: x["score"] for x in r.redundancy[m2]}
            keys = sorted(s1)
            rho[f"{m1}~{m2}"] = float(spearmanr([s1[k] for k in keys], [s2[k] for k in keys])[0])
    print("Spearman correlation of redundancy scores across blocks: "
          + ", ".join(f"{k} {v:.2f}" for k, v in rho.items()))
    out["redundancy_spearman"] = rho
    p = r.pruning
    if p:
        print(f"\npruning: held-out loss, {p['n_tokens']} tokens of other held-out documents; "
              f"unpruned {p['baseline']:.4f} nats/token")
        rs = {s["n_drop"]: s for s in p["random_summary"]}
        rows = []
        print(f"  {'method':>7} {'n':>2} {'dropped':>14} {'loss':>8} {'delta':>8} {'z vs random':>11} "
              f"{'beats random':>12}")
        for row in p["table"]:
            s = rs.get(row["n_drop"])
            rl = [x["loss"] for x in p["random"] if x["n_drop"] == row["n_drop"]]
            z = (row["loss"] - s["mean"]) / s["std"] if s and s["std"] else float("nan")
            beat = f"{sum(row['loss'] < x for x in rl)}/{len(rl)}"
            rows.append({**row, "z_vs_random": z, "beats_random": beat})
            print(f"  {row['method']:>7} {row['n_drop']:>2} {str(row['dropped']):>14} {row['loss']:>8.4f} "
                  f"{row['delta']:>+8.4f} {z:>11.2f} {beat:>12}")
        for n, s in rs.items():
            sd = float("nan") if s["std"] is None else s["std"]
            print(f"  {'random':>7} {n:>2} {'':>14} {s['mean']:>8.4f} ± {sd:.4f} (n={s['n']}, median "
                  f"{np.median([x['loss'] for x in p['random'] if x['n_drop'] == n]):.4f})")
        best = {}
        for n in range(1, p["prune_max"] + 1):
            cand = [x for x in p["table"] if x["n_drop"] == n]
            b = min(cand, key=lambda x: x["loss"])
            best[n] = b["method"]
        print("  lowest loss per n: " + ", ".join(f"n={n}: {m}" for n, m in best.items()))
        out["pruning_rows"] = rows
        out["best_per_n"] = best
    if r.sae:
        th = r.sae["thresholds"]
        print(f"\nSAE feature matching across adjacent layers of {r.sae['source']} (thresholds {th}):")
        print(f"  {'pair':>7} {'best mean':>9} {'null':>6} {'persist@0.5':>11} {'null':>6} {'appear@0.5':>10} "
              f"{'assigned':>8} {'null':>6}  slope_b")
        slopes = {x["layer"]: x["slope"] for x in r.sae["layers"]}
        k = th.index(0.5)
        for q in r.sae["pairs"]:
            n = q.get("null") or {}
            am = n.get("assigned_mean")
            print(f"  {q['layer_a']:>3}->{q['layer_b']:<3} {q['best_mean']:>9.3f} {n.get('best_mean', float('nan')):>6.3f} "
                  f"{q['frac_persist'][k]:>11.3f} {n['frac_persist'][k] if n else float('nan'):>6.3f} "
                  f"{q['frac_appear'][k]:>10.3f} {q.get('assigned_mean', float('nan')):>8.3f} "
                  f"{am if am is not None else float('nan'):>6.3f}  {slopes[q['layer_b']]:.3f}")
    out["figures"] = {k: str(v) for k, v in res["paths"].items()}
    from featuregeo.core.util import atomic_write_json

    atomic_write_json(Path(a.out) / "study.json", out)
    print(f"\nwrote {a.out}/layers.json, study.json and figures in {out['seconds']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
