"""`featuregeo atoms`: argparse and printing."""

from __future__ import annotations

import time
from pathlib import Path

from featuregeo.cli.common import bad, fit_ranks, int_list, log  # noqa: F401


def cmd_atoms(args) -> int:
    from featuregeo.core.util import parse_layers

    if (args.layer is None) == (args.layers is None):
        raise bad("--layer/--layers: expected exactly one of --layer L or --layers 3,9,15")
    layers = [args.layer] if args.layer is not None else parse_layers(args.layers)
    if not layers:
        raise bad("--layers: expected explicit layers like '3,9,15'")
    t0 = time.perf_counter()
    from featuregeo.pipeline import atoms as pipeline
    res = pipeline.run(args.model, layers, Path(args.out), sae=args.sae, seed=args.seed, fast=args.fast,
                            tasks=args.tasks, pair_files=args.pairs or (), template=args.template,
                            sae_space=args.sae_space, max_pairs=args.max_pairs, crystal_mode=args.crystal_mode,
                            crystal_kw={"remove_pcs": args.crystal_remove_pcs, "min_cosine": args.crystal_min_cosine})
    for L, r in res.items():
        a = r["atoms"]
        raw = a.best("raw")
        lda = a.best("lda")
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"layer {L}: {a.n_pairs} pairs ({a.n_test} held out), {len(a.task_names)} tasks, "
              f"{len(a.skipped)} skipped; PC1 r(d_chars) {f(a.distractors.get('pc1_r_chars'))}, "
              f"r(d_tokens) {f(a.distractors.get('pc1_r_tokens'))}")
        if raw and lda:
            print(f"  held-out analogy {f(raw['analogy_accuracy'])} -> {f(lda['analogy_accuracy'])} (LDA "
                  f"{lda['n_components']}); silhouette {f(raw['silhouette'])} -> {f(lda['silhouette'])}; "
                  f"task acc {f(raw['task_accuracy'])} -> {f(lda['task_accuracy'])}")
        if r["crystals"] is not None:
            c = r["crystals"]
            print(f"  crystals: {c.n_matches} matches among {c.n_candidate_pairs} candidate pairs of {c.n_features} "
                  f"features; top cosine {f(c.crystals[0]['cosine'] if c.crystals else None)}")
    log(f"atoms: wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    return 0




def add(sub) -> None:
    at = sub.add_parser("atoms", help="function vectors of word pairs, LDA on held-out pairs, crystals among SAE features")
    at.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    at.add_argument("--layer", type=int, help="one layer: files go straight into --out")
    at.add_argument("--layers", help="several layers, e.g. '3,9,15': one sub-directory each (resumable)")
    at.add_argument("--out", required=True)
    at.add_argument("--sae", default="default", help="SAE source for the crystal search ('none' to skip; default: "
                    "the shipped suite)")
    at.add_argument("--sae-space", action="store_true", help="also analyse word vectors passed through the SAE")
    at.add_argument("--tasks", help="comma list of built-in tasks (default: all; '' for none, with --pairs)")
    at.add_argument("--pairs", action="append", metavar="FILE",
                    help="extra tasks: CSV input,output[,task] or JSON [{'input':..,'output':..}] (repeatable)")
    at.add_argument("--template", default=" {word}", help="prompt template; the vector is its last token")
    at.add_argument("--max-pairs", type=int, help="cap pairs per task (chosen by hash)")
    at.add_argument("--crystal-mode", choices=["ann", "exhaustive"], default="ann")
    at.add_argument("--crystal-min-cosine", type=float, default=0.4, help="keep quadruples with cos(b-a, d-c) >= this")
    at.add_argument("--crystal-remove-pcs", type=int, default=0, help="search with the top PCs of the rows projected out")
    at.add_argument("--fast", action="store_true", help="at most 24 pairs per task, fewer quadruples (the demo)")
    at.add_argument("--seed", type=int, default=0)
    at.set_defaults(func=cmd_atoms)
