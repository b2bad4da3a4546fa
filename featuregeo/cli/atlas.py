"""`featuregeo atlas`: argparse and printing."""

from __future__ import annotations

import time
from pathlib import Path

from featuregeo.cli.common import bad, fit_ranks, int_list, log  # noqa: F401


def cmd_atlas(args) -> int:
    from featuregeo.core.util import parse_layers

    t0 = time.perf_counter()
    from featuregeo.pipeline import atlas as pipeline
    res = pipeline.run(args.source, Path(args.out), layers=parse_layers(args.layers), lobes=args.lobes,
                            atoms=args.atoms, galaxy=args.galaxy, harvest=args.harvest, labels=args.labels or (),
                            layout=args.layout, affinity=args.affinity, seed=args.seed)
    r = res["result"]
    print(f"atlas: {len(r.layers)} layers, {r.n_features} features -> {res['index']}")
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
    at.add_argument("--labels", metavar="FILE", nargs="+", action="extend",
                    help="label CSV/JSON files or Neuronpedia explanation exports (batch-N.jsonl.gz or a folder)")
    at.add_argument("--layout", choices=["umap", "tsne", "pca"], default="umap")
    at.add_argument("--affinity", default="phi", help="lobe affinity that colours the map (default phi)")
    at.add_argument("--seed", type=int, default=0)
    at.set_defaults(func=cmd_atlas)
