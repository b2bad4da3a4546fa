"""`featuregeo harvest`: argparse and printing."""

from __future__ import annotations

import time

from featuregeo.cli.common import add_cluster_options, log


def params_from_args(args):
    """The :class:`~featuregeo.io.harvest.HarvestParams` of the command line (``--shard-batches`` batches per shard)."""
    from featuregeo.core.results import check_int
    from featuregeo.io.harvest import HarvestParams

    check_int("--shard-batches", args.shard_batches, minimum=1)
    check_int("--batch-size", args.batch_size, minimum=1)
    return HarvestParams(block_len=args.block_len, threshold=args.threshold, batch_size=args.batch_size,
                         shard_blocks=args.batch_size * args.shard_batches, max_blocks=args.max_blocks,
                         max_blocks_per_doc=args.max_blocks_per_doc, store_activations=args.store_activations,
                         dashboards=not args.no_dashboards, dashboard_k=args.dashboard_k,
                         dashboard_window=args.dashboard_window, dashboard_logits=args.dashboard_logits)


def cmd_harvest(args) -> int:
    from featuregeo.core.util import parse_layers
    from featuregeo.pipeline import harvest as pipeline

    t0 = time.perf_counter()
    h = pipeline.run(None if args.source == "none" else args.source, args.out, params_from_args(args),
                     model=args.model, corpus=args.corpus, genre=args.genre, split=args.split,
                     held_out=args.held_out, order=args.order, layers=parse_layers(args.layers),
                     device=args.device, seed=args.seed, scheduler=args.scheduler, workers=args.workers)
    log(f"harvest: {h.n_blocks} blocks of {args.block_len} tokens, layers {h.layers} -> {args.out} "
        f"in {time.perf_counter() - t0:.0f}s")
    return 0


def add(sub) -> None:
    h = sub.add_parser("harvest", help="which SAE features fire in each block of text (resumable)")
    h.add_argument("source", metavar="SOURCE", help="SAE source (sae-lens folders/releases or 'default'), or "
                   "'none' with --store-activations")
    h.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    h.add_argument("--corpus", default="builtin", help="'builtin', a .jsonl/.json/.parquet/.txt file, a folder, "
                   "or hf:NAME (online); text must be UTF-8 (a folder skips and counts other files)")
    h.add_argument("--genre", default="subfolder", help="for a folder corpus: a genre label for every file, or "
                   "'subfolder' to label each file by its first-level subfolder (default)")
    h.add_argument("--split", choices=["train", "heldout", "all"], default="heldout")
    h.add_argument("--held-out", type=float, default=0.1, help="held-out fraction of documents")
    h.add_argument("--order", choices=["interleave", "corpus"], default="interleave",
                   help="document order: round-robin over genres and sources, so any --max-blocks prefix is "
                   "balanced (default), or the corpus's own order")
    h.add_argument("--layers")
    h.add_argument("--out", required=True)
    h.add_argument("--block-len", type=int, default=256)
    h.add_argument("--threshold", type=float, default=1.0, help="a feature fires when its activation exceeds this")
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--shard-batches", type=int, default=4, help="batches per shard (the unit of resumption)")
    h.add_argument("--max-blocks", type=int)
    h.add_argument("--max-blocks-per-doc", type=int)
    h.add_argument("--store-activations", action="store_true")
    h.add_argument("--no-dashboards", action="store_true", help="skip the feature dashboards (top contexts, "
                   "activation histograms, densities, logit effects)")
    h.add_argument("--dashboard-k", type=int, default=10, help="top activating contexts kept per feature (default 10)")
    h.add_argument("--dashboard-window", type=int, default=24, help="tokens per context (default 24)")
    h.add_argument("--dashboard-logits", type=int, default=10,
                   help="promoted and suppressed output tokens kept per feature (default 10)")
    h.add_argument("--device", default="cpu")
    h.add_argument("--seed", type=int, default=0)
    add_cluster_options(h)
    h.set_defaults(func=cmd_harvest)
