"""Edge convergence on Gemma 3 270M: the zero baseline (METHODS.md's formula as written) against the mean
baseline, Gauss-Legendre and midpoint nodes, edges 5 -> 6 in the PCA bases (top 8 directions, one row).

    nice -n 19 python analyses/interaction_convergence.py --out interaction-convergence [--tokens 64]

Writes ``convergence_zero_vs_mean.json`` (per rule/baseline: node counts, relative change against the
largest count, total edge mass) and ``convergence_zero_vs_mean.png``.  A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COUNTS = (1, 2, 3, 4, 8, 16, 32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.io.models import load_model
    from featuregeo.pl.base import pyplot, save_figure
    from featuregeo.tl.interaction import convergence, pca_basis, token_rows

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model("default", threads=args.threads)
    rows = token_rows(lm.tokenizer, 8, args.tokens, split="train")
    acts, bos = section_activations(lm, rows, [5, 6])
    step = block_step(lm, 6, bos[5], args.tokens, dtype="float32")
    b5, b6 = pca_basis(5, acts[5], 1e-9), pca_basis(6, acts[6], 1e-9)
    mean = acts[5].reshape(-1, acts[5].shape[-1]).mean(axis=0, dtype=np.float64)
    res = {}
    for rule in ("gauss", "midpoint"):
        for name, base in (("zero", None), ("mean", mean)):
            c = convergence(acts[5][:1], step, b5, b6, n_in=8, n_out=8, step_counts=COUNTS, rule=rule, baseline=base,
                            dtype="float32")
            res[f"{rule}/{name}"] = {"steps": c.steps, "rel_change": c.rel_change, "total": c.total}
            print(f"{rule:>8} {name:>4}: rel. change vs {COUNTS[-1]} nodes "
                  + ", ".join(f"{s}:{x:.2g}" for s, x in zip(c.steps, c.rel_change)) + "; total "
                  + ", ".join(f"{t:.3g}" for t in c.total), flush=True)
    (out / "convergence_zero_vs_mean.json").write_text(json.dumps(res, indent=1))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    limit = res["gauss/mean"]["total"][-1]
    for key, v in res.items():
        style = "o-" if key.endswith("mean") else "o--"
        axes[0].plot(v["steps"][:-1], np.maximum(v["rel_change"][:-1], 1e-9), style, label=key)
        axes[1].plot(v["steps"], np.asarray(v["total"]) / limit, style, label=key)
    axes[0].set(xscale="log", yscale="log", xlabel="quadrature nodes",
                ylabel=f"||E(n) - E({COUNTS[-1]})|| / ||E({COUNTS[-1]})||", title="relative change")
    axes[1].set(xscale="log", yscale="log", xlabel="quadrature nodes", ylabel="total edge mass / mean-baseline limit",
                title="total edge mass")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Gemma 3 270M block 6, edges 5->6 (PCA bases, top 8, 1 row x {args.tokens} tokens)", fontsize=9)
    save_figure(fig, out / "convergence_zero_vs_mean.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
