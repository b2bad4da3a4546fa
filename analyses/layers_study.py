"""Layer comparison on a real model: which similarity measure finds the blocks that can be dropped?

Runs the layers pipeline (``featuregeo.pipeline.layers.run``, as ``featuregeo layers`` does: cosine,
linear CKA, StructLens UAS and tree edit distance; SAE matching across the shipped suite; pruning
check) and prints, per measure, the blocks it deems most redundant,
the held-out loss after dropping the n most redundant, the same against random drops (mean, std,
z-score), and the rank correlation between the measures' redundancy scores.  Resumable: a rerun
with the same settings reuses everything already computed in ``--out`` (``--out/.checkpoint``).

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

    from featuregeo.core.util import atomic_write_json
    from featuregeo.pipeline import layers as layers_pipeline
    from featuregeo.pl.layers import figure_names
    from featuregeo.tl.layers import LayersParams

    t0 = time.perf_counter()
    opts = dict(n_blocks=a.n_blocks, block_len=a.block_len, loss_blocks=a.loss_blocks,
                loss_block_len=a.loss_block_len, prune_max=a.prune_max, random_drops=a.random_drops,
                null_assignment=not a.no_null_assignment, seed=a.seed)
    params = LayersParams.fast(seed=a.seed) if a.fast else LayersParams(**opts)
    r = layers_pipeline.run(a.model, Path(a.out), params, sae=a.sae)
    p = r.params
    out: dict = {"seconds": time.perf_counter() - t0, "params": p.to_dict()}
    print(f"\n== {r.model}: {r.data.n_tokens} tokens for similarity ({p.n_blocks} held-out blocks of {p.block_len})")
    print("most redundant blocks (sim of block input vs output):")
    for m, red in r.redundancy.items():
        print(f"  {m:>7}: " + ", ".join(f"{x.block} ({x.score:.3f})" for x in red[:5]))
    ms = list(r.redundancy)
    rho = {}
    for i, m1 in enumerate(ms):
        for m2 in ms[i + 1:]:
            s1 = {x.block: x.score for x in r.redundancy[m1]}
            s2 = {x.block: x.score for x in r.redundancy[m2]}
            keys = sorted(s1)
            rho[f"{m1}~{m2}"] = float(spearmanr([s1[k] for k in keys], [s2[k] for k in keys])[0])
    print("Spearman correlation of redundancy scores across blocks: "
          + ", ".join(f"{k} {v:.2f}" for k, v in rho.items()))
    out["redundancy_spearman"] = rho
    pr = r.pruning
    if pr is not None:
        print(f"\npruning: held-out loss, {pr.n_tokens} tokens of other held-out documents; "
              f"unpruned {pr.baseline:.4f} nats/token")
        rows = []
        print(f"  {'method':>7} {'n':>2} {'dropped':>14} {'loss':>8} {'delta':>8} {'z vs random':>11} "
              f"{'beats random':>12}")
        for row in pr.table:
            s = pr.summary(row.n_drop)
            rl = [x.loss for x in pr.random if x.n_drop == row.n_drop]
            z = (row.loss - s.mean) / s.std if s is not None and s.std else float("nan")
            beat = f"{sum(row.loss < x for x in rl)}/{len(rl)}"
            rows.append({**row.to_dict(), "z_vs_random": z, "beats_random": beat})
            print(f"  {row.method:>7} {row.n_drop:>2} {str(row.dropped):>14} {row.loss:>8.4f} "
                  f"{row.delta:>+8.4f} {z:>11.2f} {beat:>12}")
        for s in pr.random_summary:
            if s.mean is None:
                continue
            sd = float("nan") if s.std is None else s.std
            print(f"  {'random':>7} {s.n_drop:>2} {'':>14} {s.mean:>8.4f} ± {sd:.4f} (n={s.n}, median "
                  f"{np.median([x.loss for x in pr.random if x.n_drop == s.n_drop]):.4f})")
        best = {}
        for n in range(1, pr.prune_max + 1):
            cand = [x for x in pr.table if x.n_drop == n]
            best[n] = min(cand, key=lambda x: x.loss).method
        print("  lowest loss per n: " + ", ".join(f"n={n}: {m}" for n, m in best.items()))
        out["pruning_rows"] = rows
        out["best_per_n"] = best
    sae = r.sae
    if sae is not None:
        th = list(sae.thresholds)
        k = min(range(len(th)), key=lambda i: abs(th[i] - 0.5))
        print(f"\nSAE feature matching across adjacent layers of {sae.source} (thresholds {th}):")
        print(f"  {'pair':>7} {'best mean':>9} {'null':>6} {f'persist@{th[k]:g}':>11} {'null':>6} "
              f"{f'appear@{th[k]:g}':>10} {'assigned':>8} {'null':>6}  slope_b")
        slopes = {x.layer: x.slope for x in sae.layers}
        nan = float("nan")

        def f(v):
            return nan if v is None else v

        for q in sae.pairs:
            n = q.null
            print(f"  {q.layer_a:>3}->{q.layer_b:<3} {q.real.best_mean:>9.3f} {f(n and n.best_mean):>6.3f} "
                  f"{q.real.frac_persist[k]:>11.3f} {f(n and n.frac_persist[k]):>6.3f} "
                  f"{q.real.frac_appear[k]:>10.3f} {f(q.real.assigned_mean):>8.3f} "
                  f"{f(n and n.assigned_mean):>6.3f}  {f(slopes[q.layer_b]):.3f}")
    out["figures"] = {k: str(Path(a.out) / v) for k, v in figure_names(r).items()}
    atomic_write_json(Path(a.out) / "study.json", out)
    print(f"\nwrote {a.out}/layers.json, study.json and figures in {out['seconds']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
