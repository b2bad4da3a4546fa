"""Interaction-basis study on Gemma 3 270M: one section of four node layers (after blocks 5..8),
8,192 tokens, compared with PCA.

    flock /work/heavy.lock python analyses/interaction_study.py --out interaction-study \\
        [--layers 5-8] [--n-rows 64] [--row-len 128] [--edge-rows 64] [--edge-steps 3] [--zero-check]
    flock /work/heavy.lock python analyses/interaction_study.py --out interaction-study --loss-rows 16

Resumable through the pipeline's checkpoint: the stages can be run one at a time (the first command:
bases, edges and SAE cosines; the second adds the held-out loss curve, reusing every finished unit).  Prints the per-layer table, the edge sparsity and convergence, the
ablation curves, the SAE cosines, the stage timings of this invocation and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.pipeline import interaction as pipeline
from featuregeo.tl.interaction import InteractionParams, InteractionResult, top_fraction


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def report(res, *, rss: bool = True) -> None:
    p = res.params
    print(f"\n== interaction basis of {res.model}, node layers {p.layers[0]}..{p.layers[1]}, {res.n_tokens} tokens, "
          f"M' {p.jacobian} ({p.n_sources} sources), thresholds G {p.gram_threshold:g} M {p.m_threshold:g}")
    print("retained dimensions at the run's thresholds (n_gram, n_inter, n_pca) and eigenvalues above 1e-6 / 1e-4 "
          "/ 1e-2 of the largest (M for the interaction basis, G for PCA)")
    print(f"{'layer':>5} {'method':>11} {'n_gram':>6} {'n_inter':>7} {'n_pca':>5} {'M rel.se':>8} "
          f"{'inter 1e-6/1e-4/1e-2':>20} {'PCA 1e-6/1e-4/1e-2':>18}  SAE best|cos| median: inter / PCA / random")
    for r in res.layers:
        b = r.basis
        nL = "/".join(str(int((b.importance > t * b.importance[0]).sum())) for t in (1e-6, 1e-4, 1e-2))
        nD = "/".join(str(int((r.pca.importance > t * r.pca.importance[0]).sum())) for t in (1e-6, 1e-4, 1e-2))
        s = r.sae
        sae = "-" if s is None else f"{s.median_interaction:.3f} / {s.median_pca:.3f} / {s.median_random:.3f}"
        print(f"{r.layer:>5} {b.method:>11} {r.n_gram:>6} {r.n_interaction:>7} {r.n_pca:>5} "
              f"{r.m_rel_se:>8.3g} {nL:>20} {nD:>18}  {sae}")
    for e, q in zip(res.edges, res.pca_edges):
        c = e.convergence
        conv = "" if c is None else "; convergence " + ", ".join(f"{s}:{x:.3g}" for s, x in zip(c.steps, c.rel_change))
        print(f"edges {e.layer_in}->{e.layer_out} (top {e.edges.shape[1]}x{e.edges.shape[0]}, {e.steps} steps, "
              f"{e.n_tokens} tokens): top-1% mass interaction {e.top1_mass:.3f}, PCA {q.top1_mass:.3f}{conv}")
        E, Q = np.asarray(e.edges), np.asarray(q.edges)
        print(f"    edge 0->0 share interaction {E[0, 0] / E.sum():.3f}, PCA {Q[0, 0] / Q.sum():.3f}; top-5% mass "
              f"{top_fraction(E, 0.05):.3f} vs {top_fraction(Q, 0.05):.3f}; without direction 0: top-1% "
              f"{top_fraction(E[1:, 1:]):.3f} vs {top_fraction(Q[1:, 1:]):.3f}, top-5% "
              f"{top_fraction(E[1:, 1:], 0.05):.3f} vs {top_fraction(Q[1:, 1:], 0.05):.3f}")
        if c is not None:
            print("    edge total vs steps (convergence rows): " + ", ".join(f"{s}:{t:.3g}" for s, t in
                                                                       zip(c.steps, c.total)))
    for r in res.layers:
        a = r.ablation
        if a is None:
            continue
        print(f"loss keeping top n at layer {a.layer} (baseline {a.baseline:.3f} nats, {a.n_tokens} held-out tokens): "
              + ", ".join(f"n={n}: {x:.3f} vs PCA {y:.3f}" for n, x, y in zip(a.n, a.loss_interaction, a.loss_pca)))
    for r in res.layers:
        if r.sae is not None:
            s = r.sae
            print(f"SAE layer {s.layer} ({s.n_sae} decoder rows): fraction of top {len(s.interaction)} directions with best "
                  f"|cos| > 0.5: interaction {np.mean(s.interaction > 0.5):.2f}, PCA {np.mean(s.pca > 0.5):.2f}, random "
                  f"{np.mean(s.random > 0.5):.2f}")
    print("timings of the invocation that wrote this result (s; reused units take ~0): "
          + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()) + f"; total {res.seconds:.1f}"
          + (f"; peak RSS {peak_rss_gb():.2f} GB" if rss else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", default="5-8")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--n-rows", type=int, default=64)
    ap.add_argument("--row-len", type=int, default=128)
    ap.add_argument("--n-sources", type=int, default=4)
    ap.add_argument("--edge-directions", type=int, default=32)
    ap.add_argument("--edge-rows", type=int, default=64)
    ap.add_argument("--edge-steps", type=int, default=3)
    ap.add_argument("--edge-rule", default="gauss")
    ap.add_argument("--edge-baseline", default="mean")
    ap.add_argument("--zero-check", action="store_true",
                    help="also show the convergence of the zero-baseline edges on the convergence rows")
    ap.add_argument("--convergence-rows", type=int, default=2)
    ap.add_argument("--convergence-steps", default="1,2,3,4,8")
    ap.add_argument("--loss-rows", type=int, default=0, help="held-out rows of the loss curve (0: a later "
                    "invocation with e.g. 16 adds it, reusing every finished unit)")
    ap.add_argument("--ablation-n", default="4,16,64,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="print the report of the result saved in --out")
    args = ap.parse_args(argv)
    if args.report_only:
        report(InteractionResult.load(args.out), rss=False)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    params = InteractionParams(layers=args.layers, n_rows=args.n_rows, row_len=args.row_len, n_sources=args.n_sources,
                               edge_directions=args.edge_directions, edge_rows=args.edge_rows,
                               edge_steps=args.edge_steps, edge_rule=args.edge_rule, edge_baseline=args.edge_baseline,
                               convergence_rows=args.convergence_rows,
                               convergence_steps=args.convergence_steps, loss_rows=args.loss_rows,
                               ablation_n=args.ablation_n)
    t0 = time.perf_counter()
    try:
        params.validate()
        from featuregeo.io.models import load_model

        model = load_model(args.model, threads=args.threads)
        res = pipeline.run(model, args.layers, args.out, params, sae=args.sae,
                           progress=lambda m: print(f"[{time.perf_counter() - t0:7.1f}s] {m}", file=sys.stderr,
                                                    flush=True))
    except InputError as e:
        print(f"interaction_study: error: {e}", file=sys.stderr)
        return 2
    report(res)
    if args.zero_check and params.convergence_rows > 0:
        zero_check(model, res)
    return 0


def zero_check(model, res) -> None:
    """Convergence of the edges of the first transition on the first row with the origin as the baseline
    (METHODS.md's formula as written) next to the mean baseline, same quadrature rule, top 8 directions."""
    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.tl.interaction import convergence, token_rows

    p = res.params
    layers = p.node_layers
    rows = token_rows(model.tokenizer, p.n_rows, p.row_len, split="train", seed=p.seed)
    acts, bos = section_activations(model, rows[:1], layers)
    full, _ = section_activations(model, rows, layers[:-1])
    for i, L in enumerate(layers[:1]):  # the first transition: the check costs ~ an edge set per transition
        step = block_step(model, L + 1, bos[L], p.row_len, dtype=p.dtype)
        b_in, b_out = res.layers[i].basis, res.layers[i + 1].basis
        mean = full[L].reshape(-1, full[L].shape[-1]).mean(axis=0, dtype=np.float64)
        for name, base in (("zero", None), ("mean", mean)):
            c = convergence(acts[L], step, b_in, b_out, n_in=8, n_out=8, step_counts=(1, 2, 4, 8, 16),
                            rule=p.edge_rule, baseline=base, dtype=p.dtype, batch_size=2)
            print(f"edges {L}->{L + 1} baseline {name} ({p.edge_rule}, {c.n_rows} rows, top 8): rel. change vs 16 "
                  "nodes " + ", ".join(f"{s}:{x:.2g}" for s, x in zip(c.steps, c.rel_change)) + "; total "
                  + ", ".join(f"{t:.3g}" for t in c.total), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
