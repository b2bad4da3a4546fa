"""`featuregeo demo`: argparse and printing."""

from __future__ import annotations

from pathlib import Path


def cmd_demo(args) -> int:
    from featuregeo.core.util import parse_layers
    from featuregeo.demo import run_demo

    return run_demo(Path(args.out), fast=args.fast, full=args.full, layers=parse_layers(args.layers))


def add(sub) -> None:
    d = sub.add_parser("demo", help="run the main analyses on the shipped default (real model, SAEs, text)")
    d.add_argument("--out", default="featuregeo-demo", help="output directory (default: featuregeo-demo)")
    d.add_argument("--fast", action="store_true", help="fewer blocks, repeats and clusters, PCA layout (smoke tests)")
    d.add_argument("--full", action="store_true",
                   help="the larger statistics: twice the blocks, more permutations and bootstrap replicates "
                        "(about 10 minutes on 2 cores; the default takes about 3)")
    d.add_argument("--layers", help="a subset of the shipped layers (default: all)")
    d.set_defaults(func=cmd_demo)
