"""`featuregeo lobes`: argparse and printing."""

from __future__ import annotations

from featuregeo.cli.common import add_cluster_options, bad, int_list, log


def _affinities(text: str | None):
    if text is None:
        return None
    affs = tuple(a.strip() for a in text.split(",") if a.strip())
    if not affs:
        raise bad(f"--affinities: expected a comma list of phi,jaccard,dice,overlap,simple_matching. "
                  f"Got {text!r} instead.")
    return affs


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def cmd_lobes(args) -> int:
    from featuregeo.pipeline import lobes as pipeline
    from featuregeo.tl.lobes import LobesParams

    kw = {}
    if args.affinities is not None:
        kw["affinities"] = _affinities(args.affinities)
    if args.n_clusters is not None:
        kw["n_clusters"] = tuple(int_list(args.n_clusters, "--n-clusters"))
    if args.logreg_max_clusters is not None:
        kw["logreg_max_clusters"] = None if args.logreg_max_clusters == 0 else args.logreg_max_clusters
    params = LobesParams(n_permutations=args.permutations, logreg_null_repeats=args.logreg_null,
                         heldout_fraction=args.heldout_fraction, seed=args.seed, **kw)
    res = pipeline.run(args.source, args.harvest, args.out, params, layers=args.layers, scheduler=args.scheduler,
                       workers=args.workers)
    for rec in res.layers:
        print(f"layer {rec.layer}: {rec.n_usable} usable features, {rec.n_blocks} training / "
              f"{rec.n_blocks_heldout} held-out blocks")
        shown = {2, 3, max(rec.n_clusters)}
        for r in rec.records:
            if r.n_clusters in shown:
                print(f"  {r.affinity:>15} k={r.n_clusters:<4} AMI {_fmt(r.ami)} (sigma {_fmt(r.ami_sigma, '.1f')}, "
                      f"p {_fmt(r.ami_p, '.3g')})  logreg {_fmt(r.logreg_bal_acc)}  "
                      f"genre V {_fmt(r.genre_cramers_v)}  majority {r.genre_majority}")
    log(f"lobes: wrote {args.out} (lobes.json; figures in layer_L/)")
    return 0


def add(sub) -> None:
    lb = sub.add_parser("lobes", help="functional lobes from co-occurrence, and whether they are spatial")
    lb.add_argument("source", metavar="SOURCE", help="the SAE source whose features the harvest recorded")
    lb.add_argument("--harvest", required=True, help="a directory written by `featuregeo harvest`")
    lb.add_argument("--out", required=True, help="output directory (lobes.json, layer_L/*.png; resumable)")
    lb.add_argument("--layers", help="default: every SAE layer of the harvest")
    lb.add_argument("--affinities", help="comma list of phi,jaccard,dice,overlap,simple_matching (default: all)")
    lb.add_argument("--n-clusters", help="comma list (default 2,3,4,8,16,...,1024, capped by usable features)")
    lb.add_argument("--permutations", type=int, default=100, help="AMI permutation null size")
    lb.add_argument("--logreg-null", type=int, default=20, help="random-geometry null repeats for the logistic regression")
    lb.add_argument("--logreg-max-clusters", type=int, default=None,
                    help="no logistic regression above this many lobes (default 64; 0: no limit)")
    lb.add_argument("--heldout-fraction", type=float, default=0.2,
                    help="fraction of documents held out for the lobe -> genre table (0: none)")
    lb.add_argument("--seed", type=int, default=0)
    add_cluster_options(lb)
    lb.set_defaults(func=cmd_lobes)
