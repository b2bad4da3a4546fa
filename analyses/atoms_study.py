"""Atom-scale study on a real model: does LDA (fitted on train pairs) improve HELD-OUT analogy accuracy
and silhouette, does PC1 of the difference vectors track word length, and are there more crystals among
SAE features than in a Gaussian cloud of the same shape?

    python analyses/atoms_study.py --out atoms-study [--model default] [--layers 3,9,15] [--sae default]
        [--sae-space] [--max-pairs N]

Prints one block per layer (numbers are whatever they are) and writes the usual ``featuregeo atoms``
outputs under ``--out`` (resumable: finished layers are reused).
"""

from __future__ import annotations

import argparse
import sys

from featuregeo.core.errors import InputError
from featuregeo.pipeline import atoms as atoms_pipeline
from featuregeo.tl.atoms import AtomsParams


def _f(v, w=6):
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.3f}"


def report_space(layer: int, space: str, n_pairs: int, n_test: int, task_names, skipped, dis, methods) -> None:
    print(f"layer {layer} [{space}]: {n_pairs} pairs ({n_test} held out), tasks {len(task_names)}, "
          f"skipped {[s.task for s in skipped]}")
    evr = dis.explained_variance_ratio
    print(f"  PC1 of differences: {_f(float(evr[0]) if len(evr) else None)} of variance; r(PC1, d_chars) "
          f"{_f(dis.pc1_r_chars)} (Spearman {_f(dis.pc1_rho_chars)}), r(PC1, d_tokens) {_f(dis.pc1_r_tokens)}; "
          f"PC most correlated with d_chars: PC{dis.best_pc_chars}")
    print(f"  {'method':<11} {'k':>4} {'analogy':>8} {'task acc':>8} {'silhou.':>8} {'|r| PC1-chars':>13}  (held-out pairs)")
    for r in methods:
        print(f"  {r.method:<11} {r.n_components:>4} {_f(r.analogy_accuracy, 8)} {_f(r.task_accuracy, 8)} "
              f"{_f(r.silhouette, 8)} {_f(r.pc1_r_chars, 13)}")


def report(rec) -> None:
    """One layer (:class:`~featuregeo.tl.atoms.AtomsLayer`): both spaces and the crystals."""
    report_space(rec.layer, "residual", rec.n_pairs, rec.n_test, rec.task_names, rec.skipped, rec.distractors,
                 rec.methods)
    if rec.sae_space is not None:
        report_space(rec.layer, "sae", rec.n_pairs, rec.n_test, rec.task_names, rec.skipped,
                     rec.sae_space.distractors, rec.sae_space.methods)
    c = rec.crystals
    if c is not None:
        null = rec.crystal_null
        n_par = int((c.quadruples.kind == "parallelogram").sum())
        null_text = (f"Gaussian null with the same covariance: {null.n_matches} (top cosine {_f(null.top_cosine)})"
                     if null is not None else "no null run")
        print(f"  crystals: {c.n_matches} quadruples with cosine >= {c.params.min_cosine} among "
              f"{c.n_candidate_pairs} candidate pairs of {c.n_features} features; {null_text}; "
              f"{n_par} of the top {len(c)} are parallelograms")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="atoms-study")
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", default="3,9,15")
    ap.add_argument("--sae", default="default")
    ap.add_argument("--sae-space", action="store_true")
    ap.add_argument("--max-pairs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        params = AtomsParams(sae_space=args.sae_space, max_pairs=args.max_pairs, seed=args.seed)
        res = atoms_pipeline.run(args.model, args.layers, args.out, params, sae=args.sae)
    except InputError as e:
        print(f"atoms_study: error: {e}", file=sys.stderr)
        return 2
    for rec in res.layers:
        report(rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
