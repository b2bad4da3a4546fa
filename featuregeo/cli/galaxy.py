"""`featuregeo galaxy` and `featuregeo info`: argparse and printing."""

from __future__ import annotations

import argparse
import time

from featuregeo.cli.common import add_cluster_options, fit_ranks, log


def add_galaxy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("galaxy")
    g.add_argument("--fit-ranks", type=fit_ranks, default=(11, 150), metavar="A,B",
                   help="rank window of the power-law fit (1-based, inclusive; default 11,150 as the paper); "
                        "clipped at the numerical rank of the spectrum")
    g.add_argument("--normalize", action="store_true", help="scale decoder rows to unit norm first")
    g.add_argument("--uncentered", action="store_true", help="second-moment matrix instead of the covariance")
    g.add_argument("--no-null", action="store_true", help="skip the isotropic Gaussian null")
    g.add_argument("--no-entropy", action="store_true", help="skip the clustering entropy")
    g.add_argument("--entropy-subsample", type=int, default=5000, metavar="N")
    g.add_argument("--entropy-pca", type=int, default=100, metavar="P", help="PCA dims (0 = no PCA)")
    g.add_argument("--entropy-repeats", type=int, default=20, metavar="R")
    g.add_argument("--slope-bootstrap", type=int, default=50, metavar="B",
                   help="row-bootstrap replicates of the slope interval (0: regression t-interval, too narrow)")
    g.add_argument("--entropy-k", type=int, default=1, metavar="K")
    g.add_argument("--no-zscore", action="store_true", help="do not z-score before the entropy PCA")
    g.add_argument("--activations", metavar="FILE",
                   help="raw residual activations (.npy for one layer, or .npz / .safetensors with arrays "
                        "named 'layer_L') for the SAE-vs-activations spectrum comparison")


def galaxy_params(args):
    """GalaxyParams from parsed arguments (validated by the pipeline)."""
    from featuregeo.tl.galaxy import GalaxyParams

    return GalaxyParams(
        fit_ranks=tuple(args.fit_ranks), normalize=args.normalize, center=not args.uncentered,
        null=not args.no_null, entropy=not args.no_entropy, entropy_subsample=args.entropy_subsample,
        entropy_pca_dim=None if args.entropy_pca == 0 else args.entropy_pca, entropy_zscore=not args.no_zscore,
        entropy_k=args.entropy_k, entropy_repeats=args.entropy_repeats, seed=args.seed,
        slope_bootstrap=args.slope_bootstrap,
    )


def _f(v, w: int = 7, p: int = 3) -> str:
    return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}"


def print_galaxy_table(result, reference: dict | None) -> None:
    """The per-layer table: our slope beside the paper's (at the same relative depth, layer / number of
    layers), the null, the entropy; notes on clipped windows."""
    from featuregeo.io.reference import paper_galaxy_slope_at
    from featuregeo.pl.galaxy import model_layers

    depth, how = model_layers(result)
    print(f"{'layer':>5} {'features':>9} {'excl':>5} {'rank':>5} {'fit':>9} {'slope':>7} {'CI':>17} {'R2':>5} "
          f"{'null':>7} {'paper*':>7} {'H_gauss-H_knn':>13} {'null':>8} {'excess':>8}")
    notes = []
    for r in result.layers:
        e = r.entropy
        paper = paper_galaxy_slope_at((r.layer or 0) / depth) if reference else None
        fit = f"{r.fit_ranks[0]}-{r.fit_ranks[1]}" + ("!" if r.window_clipped else "")
        print(f"{'-' if r.layer is None else r.layer:>5} {r.n_features:>9} {r.n_excluded:>5} {r.numerical_rank:>5} "
              f"{fit:>9} {_f(r.slope)} [{r.slope_ci[0]:>7.3f},{r.slope_ci[1]:>7.3f}] {_f(r.r2, 5, 2)} "
              f"{_f(r.null_slope)} {_f(paper)} {_f(e.difference if e else None, 13, 1)} "
              f"{_f(e.null_difference if e else None, 8, 1)} {_f(e.excess if e else None, 8, 1)}")
        if r.window_clipped:
            notes.append(f"! layer {r.layer}: {r.window_clipped}")
    for n in notes:
        print(n)
    if reference:
        print(f"* paper: gemma-2-2b, Gemma Scope 65k residual SAEs (Li et al. 2025), interpolated at the same relative "
              f"depth (layer / {depth}; {how}); for comparison only")


def cmd_galaxy(args) -> int:
    from featuregeo.io.reference import paper_galaxy_slopes
    from featuregeo.pipeline import galaxy as pipeline

    t0 = time.perf_counter()
    result = pipeline.run(args.source, args.out, galaxy_params(args), layers=args.layers,
                          activations=args.activations, scheduler=args.scheduler, workers=args.workers)
    print_galaxy_table(result, paper_galaxy_slopes())
    log(f"galaxy: wrote {args.out} (galaxy.json, galaxy.csv, galaxy.npz, figures) in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_info(args) -> int:
    import json

    from featuregeo.core.util import to_jsonable
    from featuregeo.io import open_suite

    suite = open_suite(args.source, args.layers)
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
    g.add_argument("--seed", type=int, default=0, help="seed of the null and the entropy subsamples (>= 0)")
    add_galaxy_options(g)
    add_cluster_options(g)
    g.set_defaults(func=cmd_galaxy)

    i = sub.add_parser("info", help="describe a source: layers, shapes, exclusions, provenance")
    i.add_argument("source", metavar="SOURCE")
    i.add_argument("--layers")
    i.add_argument("--no-load", action="store_true", help="list layers without reading weights")
    i.set_defaults(func=cmd_info)
