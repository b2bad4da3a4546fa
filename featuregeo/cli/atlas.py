"""`featuregeo atlas`: argparse and printing."""

from __future__ import annotations

import time

from featuregeo.cli.common import log

#: layer-wise analyses whose figures the atlas panel can show (featuregeo.pipeline.atlas.FIGURE_ANALYSES)
FIGURE_FLAGS = {"layers": "comparison", "lens": "lens", "updates": "updates", "interaction": "interaction"}


def cmd_atlas(args) -> int:
    from featuregeo.atlas import AtlasParams
    from featuregeo.core.util import parse_layers
    from featuregeo.pipeline import atlas as pipeline

    t0 = time.perf_counter()
    params = AtlasParams(layout=args.layout, affinity=args.affinity, n_clusters=args.n_clusters, seed=args.seed,
                         top_cofiring=args.top_cofiring, n_neighbors=args.n_neighbors, contexts=args.contexts,
                         logit_tokens=args.logit_tokens)
    res = pipeline.run(args.source, args.out, layers=parse_layers(args.layers), params=params, lobes=args.lobes,
                       atoms=args.atoms, galaxy=args.galaxy, harvest=args.harvest, labels=args.labels or (),
                       figures={name: getattr(args, f"fig_{flag}") for name, flag in FIGURE_FLAGS.items()
                                if getattr(args, f"fig_{flag}")}, export_json=args.export_json)
    print(f"atlas: {len(res.layers)} layers, {res.n_features} features -> {args.out}/index.html")
    log(f"atlas: wrote {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def add(sub) -> None:
    at = sub.add_parser("atlas", help="static offline web atlas of the features of every layer, plus tables")
    at.add_argument("source", metavar="SOURCE")
    at.add_argument("--out", required=True, help="output directory (open OUT/index.html)")
    at.add_argument("--layers", help="default: every layer of SOURCE")
    at.add_argument("--lobes", metavar="DIR", help="output of `featuregeo lobes` (DIR/layer_L/)")
    at.add_argument("--atoms", metavar="DIR", help="atoms output with crystals.csv (DIR/ or DIR/layer_L/)")
    at.add_argument("--galaxy", metavar="DIR", help="output of `featuregeo galaxy`")
    at.add_argument("--harvest", metavar="DIR", help="output of `featuregeo harvest` (firing frequency, co-firing)")
    for name, flag in FIGURE_FLAGS.items():
        at.add_argument(f"--{flag}", dest=f"fig_{flag}", metavar="DIR",
                        help=f"output of `featuregeo {name}`: its figures are shown in the side panel")
    at.add_argument("--labels", metavar="FILE", nargs="+", action="extend",
                    help="label CSV/JSON files or Neuronpedia explanation exports (batch-N.jsonl.gz or a folder)")
    at.add_argument("--layout", choices=["umap", "tsne", "pca"], default="umap")
    at.add_argument("--affinity", default="phi", help="lobe affinity that colours the map (default phi)")
    at.add_argument("--n-clusters", type=int, default=None,
                    help="lobe partition (number of clusters) shown first (default: smallest k >= 8)")
    at.add_argument("--top-cofiring", type=int, default=5, help="co-firing partners listed per feature (default 5)")
    at.add_argument("--n-neighbors", type=int, default=15, help="UMAP neighbourhood size (default 15)")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--contexts", type=int, default=5, help="top activating contexts shown per feature (default 5; "
                    "needs a --harvest with dashboards)")
    at.add_argument("--logit-tokens", type=int, default=5, help="promoted / suppressed tokens shown per feature (default 5)")
    at.add_argument("--export-json", metavar="DIR", help="also write every feature's dashboard as DIR/layer_L/<id>.json "
                    "(layout: docs/dashboards.md)")
    at.set_defaults(func=cmd_atlas)
