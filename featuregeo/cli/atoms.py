"""`featuregeo atoms`: argparse and printing."""

from __future__ import annotations

import time

from featuregeo.cli.common import bad, log


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def params_from_args(args):
    """The :class:`~featuregeo.tl.atoms.AtomsParams` of the command line (validated by the pipeline)."""
    from featuregeo.tl.atoms import AtomsParams, CrystalParams

    crystal = CrystalParams(mode=args.crystal_mode, min_cosine=args.crystal_min_cosine,
                            remove_pcs=args.crystal_remove_pcs, k=args.crystal_k,
                            max_results=args.crystal_max_results, seed=args.seed)
    return AtomsParams(tasks=args.tasks, pair_files=tuple(args.pairs or ()), template=args.template,
                       max_pairs=args.max_pairs, test_fraction=args.test_fraction, sae_space=args.sae_space,
                       crystal=crystal, seed=args.seed)


def print_summary(result) -> None:
    for a in result.layers:
        d = a.distractors
        print(f"layer {a.layer}: {a.n_pairs} pairs ({a.n_test} held out), {len(a.task_names)} tasks, "
              f"{len(a.skipped)} skipped; PC1 r(d_chars) {_f(d.pc1_r_chars)}, r(d_tokens) {_f(d.pc1_r_tokens)}")
        raw, lda = a.best("raw"), a.best("lda")
        if raw and lda:
            print(f"  held-out analogy {_f(raw.analogy_accuracy)} -> {_f(lda.analogy_accuracy)} (LDA "
                  f"{lda.n_components}); silhouette {_f(raw.silhouette)} -> {_f(lda.silhouette)}; "
                  f"task acc {_f(raw.task_accuracy)} -> {_f(lda.task_accuracy)}")
        c = a.crystals
        if c is not None:
            top = float(c.quadruples.cosine[0]) if len(c) else None
            null = f"; Gaussian null {a.crystal_null.n_matches} matches" if a.crystal_null is not None else ""
            print(f"  crystals: {c.n_matches} matches among {c.n_candidate_pairs} candidate pairs of {c.n_features} "
                  f"features; top cosine {_f(top)}{null}")


def cmd_atoms(args) -> int:
    if (args.layer is None) == (args.layers is None):
        raise bad("--layer/--layers: expected exactly one of --layer L or --layers 3,9,15")
    layers = [args.layer] if args.layer is not None else args.layers
    t0 = time.perf_counter()
    from featuregeo.pipeline import atoms as pipeline

    result = pipeline.run(args.model, layers, args.out, params_from_args(args), sae=args.sae, fast=args.fast)
    print_summary(result)
    log(f"atoms: wrote {args.out} in {time.perf_counter() - t0:.0f}s")
    return 0


def add(sub) -> None:
    at = sub.add_parser("atoms", help="function vectors of word pairs, LDA on held-out pairs, crystals among SAE features")
    at.add_argument("--model", default="default", help="model name or path (default: Gemma 3 270M, offline)")
    at.add_argument("--layer", type=int, help="one layer")
    at.add_argument("--layers", help="several layers, e.g. '3,9,15' (finished layers are reused on a rerun)")
    at.add_argument("--out", required=True)
    at.add_argument("--sae", default="default", help="SAE source for the crystal search ('none' to skip; default: "
                    "the shipped suite)")
    at.add_argument("--sae-space", action="store_true", help="also analyse word vectors passed through the SAE")
    at.add_argument("--tasks", help="comma list of built-in tasks (default: all; '' for none, with --pairs)")
    at.add_argument("--pairs", action="append", metavar="FILE",
                    help="extra tasks: CSV input,output[,task] or JSON [{'input':..,'output':..}] (repeatable)")
    at.add_argument("--template", default=" {word}", help="prompt template; the vector is its last token")
    at.add_argument("--max-pairs", type=int, help="cap pairs per task (chosen by hash; at least 3)")
    at.add_argument("--test-fraction", type=float, default=0.3, help="fraction of each task's pairs held out")
    at.add_argument("--crystal-mode", choices=["ann", "exhaustive"], default="ann")
    at.add_argument("--crystal-min-cosine", type=float, default=0.4, help="keep quadruples with cos(b-a, d-c) >= this")
    at.add_argument("--crystal-remove-pcs", type=int, default=0, help="search with the top PCs of the rows projected out")
    at.add_argument("--crystal-k", type=int, default=10, help="nearest neighbours per feature forming candidate pairs")
    at.add_argument("--crystal-max-results", type=int, default=200, help="crystals reported per layer")
    at.add_argument("--fast", action="store_true", help="at most 24 pairs per task, fewer quadruples (the demo)")
    at.add_argument("--seed", type=int, default=0)
    at.set_defaults(func=cmd_atoms)
