"""`featuregeo interaction`: argparse and printing."""

from __future__ import annotations

import time

from featuregeo.cli.common import log


def _f(v, fmt=".3f") -> str:
    return "-" if v is None or v != v else format(v, fmt)


def params_from_args(args):
    """The :class:`~featuregeo.tl.interaction.InteractionParams` of the command line (validated by the pipeline)."""
    from featuregeo.tl.interaction import InteractionParams

    return InteractionParams(
        layers=args.layers, n_rows=args.n_rows, row_len=args.row_len, batch_size=args.batch_size,
        jacobian=args.jacobian, n_sources=args.n_sources, gram_threshold=args.gram_threshold,
        m_threshold=args.m_threshold, dtype=args.dtype, edge_directions=args.edge_directions,
        edge_steps=args.edge_steps, edge_rule=args.edge_rule, edge_baseline=args.edge_baseline,
        edge_compile=not args.no_compile, edge_rows=args.edge_rows, convergence_steps=args.convergence_steps,
        convergence_rows=args.convergence_rows, ablation_n=args.ablation_n, loss_rows=args.loss_rows,
        loss_row_len=args.loss_row_len, sae_directions=args.sae_directions, seed=args.seed)


def print_summary(result) -> None:
    print(f"interaction basis of {result.model}, {result.n_tokens} tokens")
    print(result.table().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for e, p in zip(result.edges, result.pca_edges):
        c = e.convergence
        conv = "" if c is None else "; steps " + ", ".join(f"{s}: {r:.3g}" for s, r in zip(c.steps, c.rel_change))
        print(f"edges {e.layer_in}->{e.layer_out}: top-1% mass {_f(e.top1_mass)} (PCA {_f(p.top1_mass)}){conv}")


def cmd_interaction(args) -> int:
    t0 = time.perf_counter()
    from featuregeo.pipeline import interaction as pipeline

    result = pipeline.run(args.model, args.layers, args.out, params_from_args(args), sae=args.sae,
                          plots=not args.no_plots)
    print_summary(result)
    log(f"interaction: wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    return 0


def add(sub) -> None:
    p = sub.add_parser("interaction", help="interaction basis of a section of residual-stream layers, its edge graph, "
                       "and the comparison with PCA")
    p.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    p.add_argument("--layers", default="5-8", help="the section A-B: residual stream after blocks A..B (default 5-8)")
    p.add_argument("--out", required=True)
    p.add_argument("--sae", default="default", help="SAE source for the decoder cosines ('none' to skip)")
    p.add_argument("--n-rows", type=int, default=64, help="token rows from the training split (default 64)")
    p.add_argument("--row-len", type=int, default=128, help="tokens per row (default 128)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--jacobian", default="stochastic", help="M' estimator: stochastic (+-1 sources) or exact")
    p.add_argument("--n-sources", type=int, default=4, help="random +-1 sources per row (>= 2)")
    p.add_argument("--gram-threshold", type=float, default=1e-9, help="relative eigenvalue cut-off of G")
    p.add_argument("--m-threshold", type=float, default=1e-9, help="relative eigenvalue cut-off of M")
    p.add_argument("--dtype", default="float32", help="dtype of the model's passes (float32 or float64)")
    p.add_argument("--edge-directions", type=int, default=32, help="top directions per layer in the edges")
    p.add_argument("--edge-steps", type=int, default=3, help="quadrature nodes of the edges' integral (default 3)")
    p.add_argument("--edge-rule", default="gauss", help="quadrature rule: gauss (Gauss-Legendre) or midpoint")
    p.add_argument("--edge-baseline", default="mean", help="start of the integration path: mean (the layer's mean "
                   "activation) or zero (the origin; diverges behind RMSNorm)")
    p.add_argument("--no-compile", action="store_true", help="edges without torch.compile (eager mode)")
    p.add_argument("--edge-rows", type=int, default=16, help="rows used for the edges (0 skips them)")
    p.add_argument("--convergence-steps", default="1,2,3,4,8", help="node counts of the convergence check")
    p.add_argument("--convergence-rows", type=int, default=2, help="rows of the convergence check (0 skips it)")
    p.add_argument("--ablation-n", default="4,16,64,256", help="keep-top-n values of the loss curve")
    p.add_argument("--loss-rows", type=int, default=16, help="held-out rows for the loss curve (0 skips it)")
    p.add_argument("--loss-row-len", type=int, default=128)
    p.add_argument("--sae-directions", type=int, default=64, help="top directions compared to SAE decoder rows")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_interaction)
