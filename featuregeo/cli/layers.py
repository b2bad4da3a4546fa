"""`featuregeo layers`: argparse and printing."""

from __future__ import annotations


from featuregeo.cli.common import flagged, log

FLAGS = ("measures", "n_blocks", "block_len", "loss_blocks", "loss_block_len", "prune_max", "random_drops", "seed")


def params_from_args(args):
    """LayersParams from the parsed flags (``--fast`` preset, then every flag given)."""
    from featuregeo.tl.layers import LayersParams

    changes = {k: getattr(args, k) for k in FLAGS if getattr(args, k, None) is not None}
    return LayersParams.fast(**changes) if args.fast else LayersParams(**changes)



def cmd_layers(args) -> int:
    from featuregeo.core.errors import InputError
    from featuregeo.pipeline import layers as pipeline
    from featuregeo.pl.layers import figure_names

    try:
        params = params_from_args(args).validate()
    except InputError as e:
        raise InputError(flagged(e, FLAGS)) from None
    try:
        r = pipeline.run(args.model, args.out, params, sae=args.sae, galaxy=args.galaxy)
    except InputError as e:
        raise InputError(flagged(e, FLAGS)) from None
    for m, red in r.redundancy.items():
        print(f"{m:>7}: most redundant blocks {[x.block for x in red[:3]]}")
    p = r.pruning
    if p is not None:
        print(f"pruning: baseline loss {p.baseline:.4f} nats/token over {p.n_tokens} tokens")
        for row in p.table:
            print(f"  {row.method:>7} drop {row.n_drop} {row.dropped}: {row.loss:.4f}")
        for s in p.random_summary:
            mean = "-" if s.mean is None else f"{s.mean:.4f}"
            sd = "-" if s.std is None else f"{s.std:.4f}"
            print(f"   random drop {s.n_drop}: {mean} ± {sd} (n={s.n})")
    names = ["layers.json", *figure_names(r).values()]
    log(f"layers: wrote {', '.join(f'{args.out}/{n}' for n in names)}")
    return 0


def add(sub) -> None:
    ly = sub.add_parser("layers", help="cross-layer similarity (cosine, CKA, StructLens trees), SAE matching, "
                        "pruning check")
    ly.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    ly.add_argument("--sae", default="default", help="SAE suite for slopes and feature matching ('none' to skip)")
    ly.add_argument("--out", required=True)
    ly.add_argument("--measures", help="comma list of cosine,cka,uas,ted (default: all)")
    ly.add_argument("--n-blocks", type=int, help="held-out blocks for the similarity measures (default 32)")
    ly.add_argument("--block-len", type=int, help="tokens per similarity block (default 64)")
    ly.add_argument("--loss-blocks", type=int, help="held-out blocks for the pruning loss (default 32)")
    ly.add_argument("--loss-block-len", type=int, help="tokens per loss block (default 128)")
    ly.add_argument("--prune-max", type=int, help="drop up to this many blocks (default 3; 0 = no pruning)")
    ly.add_argument("--random-drops", type=int, help="random drop orders to compare with (default 5)")
    ly.add_argument("--galaxy", help="a galaxy.json (or its folder) to take slopes from instead of refitting")
    ly.add_argument("--fast", action="store_true", help="small settings (12 blocks, prune-max 2, 2 random drops)")
    ly.add_argument("--seed", type=int, default=0)
    ly.set_defaults(func=cmd_layers)
