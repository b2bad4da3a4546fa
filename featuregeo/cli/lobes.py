"""`featuregeo lobes`: argparse and printing."""

from __future__ import annotations

from pathlib import Path

from featuregeo.cli.common import bad, fit_ranks, int_list, log  # noqa: F401


def cmd_lobes(args) -> int:
    from featuregeo.core.util import parse_layers

    affs = [a.strip() for a in args.affinities.split(",")] if args.affinities else None
    ks = int_list(args.n_clusters, "--n-clusters") if args.n_clusters else None
    from featuregeo.pipeline import lobes as pipeline
    res = pipeline.run(args.source, args.harvest, Path(args.out), parse_layers(args.layers), affinities=affs,
                            n_clusters=ks, n_permutations=args.permutations, logreg_null_repeats=args.logreg_null,
                            heldout_fraction=args.heldout_fraction, seed=args.seed)
    for layer, r in res.items():
        print(f"layer {layer}:")
        for rec in r.records:
            if rec["n_clusters"] in (2, 3) or rec["n_clusters"] == max(x["n_clusters"] for x in r.records):
                acc = rec.get("logreg_bal_acc")
                print(f"  {rec['affinity']:>9} k={rec['n_clusters']:<4} AMI {rec['ami']:.3f} (sigma {rec['ami_sigma']:.1f}, "
                      f"p {rec['ami_p']:.3g})  logreg {'-' if acc is None else f'{acc:.3f}'}  "
                      f"genre V {rec.get('genre_cramers_v') if rec.get('genre_cramers_v') is None else round(rec['genre_cramers_v'], 3)}"
                      f"  majority {rec.get('genre_majority')}")
    log(f"lobes: wrote {args.out}")
    return 0




def add(sub) -> None:
    lb = sub.add_parser("lobes", help="functional lobes from co-occurrence, and whether they are spatial")
    lb.add_argument("source", metavar="SOURCE", help="the SAE source whose features the harvest recorded")
    lb.add_argument("--harvest", required=True, help="a directory written by `featuregeo harvest`")
    lb.add_argument("--out", required=True)
    lb.add_argument("--layers", help="default: every SAE layer of the harvest")
    lb.add_argument("--affinities", help="comma list of phi,jaccard,dice,overlap,simple_matching (default: all)")
    lb.add_argument("--n-clusters", help="comma list (default 2,3,4,8,16,...,1024, capped by usable features)")
    lb.add_argument("--permutations", type=int, default=100, help="AMI permutation null size")
    lb.add_argument("--logreg-null", type=int, default=20, help="random-geometry null repeats for the logistic regression")
    lb.add_argument("--heldout-fraction", type=float, default=0.2,
                    help="fraction of documents held out for the lobe -> genre table")
    lb.add_argument("--seed", type=int, default=0)
    lb.set_defaults(func=cmd_lobes)
