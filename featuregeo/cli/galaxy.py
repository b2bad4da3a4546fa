"""`featuregeo galaxy` and `featuregeo info`: argparse and printing."""

from __future__ import annotations

import argparse

import time
from pathlib import Path

from featuregeo.cli.common import bad, fit_ranks, int_list, log  # noqa: F401


def add_galaxy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("galaxy")
    g.add_argument("--fit-ranks", type=fit_ranks, default=(11, 150), metavar="A,B",
                   help="rank window of the power-law fit (1-based, inclusive; default 11,150 as the paper)")
    g.add_argument("--normalize", action="store_true", help="scale decoder rows to unit norm first")
    g.add_argument("--uncentered", action="store_true", help="second-moment matrix instead of the covariance")
    g.add_argument("--no-null", action="store_true", help="skip the isotropic Gaussian null")
    g.add_argument("--no-entropy", action="store_true", help="skip the clustering entropy")
    g.add_argument("--entropy-subsample", type=int, default=5000, metavar="N")
    g.add_argument("--entropy-pca", type=int, default=100, metavar="P", help="PCA dims (0 = no PCA)")
    g.add_argument("--entropy-repeats", type=int, default=10, metavar="R")
    g.add_argument("--entropy-k", type=int, default=1, metavar="K")
    g.add_argument("--no-zscore", action="store_true", help="do not z-score before the entropy PCA")
    g.add_argument("--activations", metavar="FILE",
                   help="raw residual activations (.npy for one layer, or .npz / .safetensors with arrays "
                        "named 'layer_L') for the SAE-vs-activations spectrum comparison")




def galaxy_params(args):
    from featuregeo.tl.galaxy import GalaxyParams

    for name in ("entropy_subsample", "entropy_repeats", "entropy_k"):
        if getattr(args, name) < 1:
            raise bad(f"--{name.replace('_', '-')}: expected a positive integer. Got {getattr(args, name)} instead.")
    return GalaxyParams(
        fit_ranks=tuple(args.fit_ranks), normalize=args.normalize, center=not args.uncentered,
        null=not args.no_null, entropy=not args.no_entropy, entropy_subsample=args.entropy_subsample,
        entropy_pca_dim=args.entropy_pca or None, entropy_zscore=not args.no_zscore, entropy_k=args.entropy_k,
        entropy_repeats=args.entropy_repeats, seed=args.seed,
    )




def print_galaxy_table(result, ref) -> None:
    print(f"{'layer':>5} {'features':>9} {'excl':>5} {'slope':>7} {'95% CI':>17} {'R2':>5} {'null':>7} "
          f"{'paper*':>7} {'H_gauss-H_knn':>13} {'null':>8} {'excess':>8}")
    for r in result.layers:
        e = r.entropy or {}
        paper = (ref or {}).get(str(r.layer))
        f = lambda v, w=7, p=3: f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}"  # noqa: E731
        print(f"{r.layer:>5} {r.n_features:>9} {r.n_excluded:>5} {f(r.slope)} "
              f"[{r.slope_ci[0]:>7.3f},{r.slope_ci[1]:>7.3f}] {f(r.r2, 5, 2)} {f(r.null_slope)} {f(paper)} "
              f"{f(e.get('difference'), 13, 1)} {f(e.get('null_difference'), 8, 1)} {f(e.get('excess'), 8, 1)}")
    if ref:
        print("* paper: gemma-2-2b, Gemma Scope 65k residual SAEs (Li et al. 2025), for comparison only")




def cmd_galaxy(args) -> int:
    from featuregeo.core.util import parse_layers

    params = galaxy_params(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    from featuregeo.io.reference import paper_reference
    from featuregeo.pipeline import galaxy as pipeline

    res = pipeline.run(args.source, parse_layers(args.layers), out, params, args.activations)
    print_galaxy_table(res["result"], paper_reference()["galaxy"]["slopes"])
    log(f"galaxy: wrote {', '.join(str(p) for p in res['paths'].values())} in {time.perf_counter() - t0:.1f}s")
    return 0




def cmd_info(args) -> int:
    import json

    from featuregeo.io import open_suite
    from featuregeo.core.util import parse_layers, to_jsonable

    suite = open_suite(args.source, parse_layers(args.layers))
    out = {"source": suite.name, "layers": suite.layers}
    if not args.no_load:
        out["clouds"] = [cloud.describe() for _, cloud in suite]
    print(json.dumps(to_jsonable(out), indent=2))
    return 0




def add(sub) -> None:
    g = sub.add_parser("galaxy", help="covariance spectrum, power-law slope and clustering entropy per layer")
    g.add_argument("source", metavar="SOURCE")
    g.add_argument("--layers", help="e.g. '0,4,8', '0-25', '0-25:2' or 'all' (default: all)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--seed", type=int, default=0)
    add_galaxy_options(g)
    g.set_defaults(func=cmd_galaxy)

    i = sub.add_parser("info", help="describe a source: layers, shapes, exclusions, provenance")
    i.add_argument("source", metavar="SOURCE")
    i.add_argument("--layers")
    i.add_argument("--no-load", action="store_true", help="list layers without reading weights")
    i.set_defaults(func=cmd_info)
