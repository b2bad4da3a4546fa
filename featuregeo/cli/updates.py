"""`featuregeo updates`: argparse and printing."""

from __future__ import annotations


from featuregeo.cli.common import flagged, log

FLAGS = ("layers", "n_rows", "seq_len", "k", "rank", "ridge", "metric", "classes", "primary", "kl_classes",
         "k_grid", "rank_grid", "kl_positions", "n_boot", "seed")


def params_from_args(args):
    """UpdatesParams from the parsed flags (``--fast`` preset, then every flag given)."""
    from featuregeo.tl.updates import UpdatesParams

    changes = {k: getattr(args, k) for k in FLAGS if getattr(args, k, None) is not None}
    for name in ("layers", "k_grid", "rank_grid"):
        if name in changes:
            try:
                changes[name] = tuple(int(x) for x in str(changes[name]).split(",") if x.strip())
            except ValueError:
                from featuregeo.core.errors import InputError

                raise InputError(f"{name}: expected comma-separated integers like '3,9,15'. "
                                 f"Got {changes[name]!r} instead.") from None
    if "kl_classes" in changes and changes["kl_classes"] in ("none", ""):
        changes["kl_classes"] = ()
    return UpdatesParams.fast(**changes) if args.fast else UpdatesParams(**changes)



def cmd_updates(args) -> int:
    from featuregeo.core.errors import InputError
    from featuregeo.pipeline import updates as pipeline
    from featuregeo.pl.updates import figure_names

    try:
        params = params_from_args(args).validate()
        r = pipeline.run(args.model, args.out, params)
    except InputError as e:
        raise InputError(flagged(e, FLAGS)) from None
    p = r.params
    print(f"{r.model}: {p.n_tokens} held-out tokens, k {p.k}, rank {p.rank}, primary class {p.primary}")
    print("  l->l+1  explained  cos(D,T)  cos(D,R)  proj T/R   mlp   attn  shuffled  spearman [95% CI]")
    for rec in r.layers:
        f = rec.fit(p.primary)
        c = {(x.target, x.neighbours): x for x in rec.controls}
        fn = rec.func(p.primary) or (rec.function[0] if rec.function else None)
        sp = "-" if fn is None else (f"{fn.spearman:.2f}" + (f" [{fn.spearman_ci[0]:.2f}, {fn.spearman_ci[1]:.2f}]"
                                                             if fn.spearman_ci else ""))
        print(f"  {rec.layer:>2}->{rec.block:<3} {f.explained:9.3f} {f.cos_dt:9.3f} {f.cos_dr:9.3f}  "
              f"{f.proj_t:.2f}/{f.proj_r:.2f} {c[('mlp', 'knn')].explained:6.3f} {c[('attn', 'knn')].explained:6.3f} "
              f"{c[('update', 'shuffled')].explained:9.3f}  {sp}")
    names = ["updates.json", *figure_names(r).values()]
    log(f"updates: wrote {', '.join(f'{args.out}/{n}' for n in names)}")
    return 0


def add(sub) -> None:
    u = sub.add_parser("updates", help="layer-update geometry: tokenwise part and residual of each layer's update")
    u.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    u.add_argument("--out", required=True)
    u.add_argument("--layers", help="transitions l (l -> l+1), comma list (default: all, 0..n_layers-2)")
    u.add_argument("--n-rows", type=int, help="held-out rows (default 64)")
    u.add_argument("--seq-len", type=int, help="tokens per row (default 128)")
    u.add_argument("--k", type=int, help="neighbours per token (default 32)")
    u.add_argument("--rank", type=int, help="rank of the local low-rank map (default 8)")
    u.add_argument("--ridge", type=float, help="relative ridge strength (default 0.01)")
    u.add_argument("--metric", help="neighbour metric: cosine (default) or euclidean")
    u.add_argument("--classes", help="comma list of diag,lowrank,global (default: all)")
    u.add_argument("--primary", help="class for the controls (default lowrank)")
    u.add_argument("--kl-classes", help="classes patched in for the output KL (default diag,lowrank; 'none')")
    u.add_argument("--k-grid", help="sensitivity: neighbour counts (default 8,16,32,64)")
    u.add_argument("--rank-grid", help="sensitivity: ranks (default 1,2,4,8,16)")
    u.add_argument("--kl-positions", type=int, help="patched positions per row (default 4)")
    u.add_argument("--n-boot", type=int, help="bootstrap resamples (default 1000)")
    u.add_argument("--fast", action="store_true", help="small settings (16 rows of 48 tokens, k 16, rank 4)")
    u.add_argument("--seed", type=int)
    u.set_defaults(func=cmd_updates)
