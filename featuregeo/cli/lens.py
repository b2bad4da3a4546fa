"""`featuregeo lens`: argparse and printing."""

from __future__ import annotations


from featuregeo.cli.common import flagged, log

FLAGS = ("block_len", "train_tokens", "chunk_tokens", "eval_tokens", "vocab_subset", "vocab_sample", "steps", "batch_tokens", "lr", "train_dtype", "eval_dtype",
         "n_boot", "probe_tokens", "causal_rows", "causal_random", "seed")


def params_from_args(args):
    """LensParams from the parsed flags (``--fast`` preset, then every flag given)."""
    from featuregeo.core.util import parse_layers
    from featuregeo.tl.lens import LensParams

    changes = {k: getattr(args, k) for k in FLAGS if getattr(args, k, None) is not None}
    layers = parse_layers(args.layers)
    if layers is not None:
        changes["layers"] = tuple(layers)
    if args.causal_layers is not None:
        cl = parse_layers(args.causal_layers)
        changes["causal_layers"] = tuple(cl or ())
    if args.no_probes:
        changes["probes"] = False
    if args.demo:
        return LensParams.demo(**changes)
    return LensParams.fast(**changes) if args.fast else LensParams(**changes)



def cmd_lens(args) -> int:
    from featuregeo.core.errors import InputError
    from featuregeo.pipeline import lens as pipeline
    from featuregeo.pl.lens import figure_names

    try:
        params = params_from_args(args).validate()
        r = pipeline.run(args.model, args.out, params, corpus=args.corpus, lens=args.lens, pretrained=args.pretrained)
    except InputError as e:
        raise InputError(flagged(e, (*FLAGS, "layers", "causal_layers"))) from None
    print(f"{'layer':>5} {'lens':>6} {'KL':>8} {'CE':>8} {'entropy':>8} {'top1':>6}")
    for row in r.rows():
        print(f"{row['layer']:>5} {row['lens']:>6} {row['kl']:8.3f} {row['ce']:8.3f} {row['entropy']:8.3f} "
              f"{row['top1']:6.3f}")
    for p in r.probe_rows():
        print(f"probe layer {p['layer']:>2} {p['task']:>6}: accuracy {p['accuracy']:.3f} control {p['control']:.3f} "
              f"selectivity {p['selectivity']:+.3f}")
    names = ["lens.json", pipeline.LENS_DIR, *figure_names(r).values()]
    log(f"lens: wrote {', '.join(f'{args.out}/{n}' for n in names)}")
    return 0


def add(sub) -> None:
    p = sub.add_parser("lens", help="logit lens, tuned lens and probes per layer (what each layer already knows)")
    p.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", help="layers to read, e.g. '0-17' or '0,4,8' (default: all)")
    p.add_argument("--corpus", default="builtin", help="'builtin', a .jsonl/.json/.parquet/.txt file, a folder, "
                   "or hf:NAME")
    p.add_argument("--lens", help="a tuned lens saved by an earlier run (OUT/tuned_lens): reuse, do not retrain")
    p.add_argument("--block-len", type=int, help="predicted positions per row (default 128)")
    p.add_argument("--pretrained", action="store_true", help="use the tuned lens shipped with the default suite "
                   "(Gemma 3 270M): no training")
    p.add_argument("--train-tokens", type=int, help="training tokens for the tuned lens (default 32768)")
    p.add_argument("--chunk-tokens", type=int, help="training tokens read and trained on at a time (default 8192)")
    p.add_argument("--eval-tokens", type=int, help="held-out tokens for the evaluation (default 8192)")
    p.add_argument("--vocab-subset", type=int, help="training vocabulary subset (default 8192; 0 = full vocabulary)")
    p.add_argument("--vocab-sample", type=int, help="complement tokens sampled per step for the rest bucket "
                   "(default 1024)")
    p.add_argument("--steps", type=int, help="optimiser steps, every layer at each (default 256)")
    p.add_argument("--batch-tokens", type=int, help="tokens per step (default 512)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-3; A: lr / sqrt(d_model))")
    p.add_argument("--train-dtype", choices=["float32", "bfloat16"], help="unembedding precision of the training "
                   "(default bfloat16)")
    p.add_argument("--eval-dtype", choices=["float32", "bfloat16"], help="unembedding precision of the evaluation")
    p.add_argument("--n-boot", type=int, help="bootstrap resamples (default 1000)")
    p.add_argument("--probe-tokens", type=int, help="training tokens per probe (default 4096)")
    p.add_argument("--causal-layers", help="layers of the probe ablation check (default '3,8,13'; '' = none)")
    p.add_argument("--causal-rows", type=int, help="held-out rows for the ablated loss (default 4)")
    p.add_argument("--causal-random", type=int, help="random direction sets per check (default 3)")
    p.add_argument("--no-probes", action="store_true", help="skip the probes and the causal check")
    p.add_argument("--fast", action="store_true", help="small settings (minutes on 2 cores)")
    p.add_argument("--demo", action="store_true", help="evaluation only on 256 held-out tokens, no probes (with "
                   "--pretrained: seconds)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_lens)
