"""Atom-scale study on a real model: does LDA (fitted on train pairs) improve HELD-OUT analogy accuracy
and silhouette, does PC1 of the difference vectors track word length, and are there more crystals among
SAE features than in a Gaussian cloud of the same shape?

    python analyses/atoms_study.py --out atoms-study [--model default] [--layers 3,9,15] [--sae default]
        [--sae-space] [--max-pairs N]

Prints one block per layer (numbers are whatever they are) and writes the usual ``featuregeo atoms``
outputs under ``--out`` (one sub-directory per layer, resumable).
"""

from __future__ import annotations

import argparse
import sys

from featuregeo.core.util import parse_layers
from featuregeo.pipeline import atoms as atoms_pipeline
from featuregeo.core.errors import InputError


def _f(v, w=6):
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.3f}"


def report(result) -> None:
    a = result
    d = a.distractors
    print(f"layer {a.layer} [{a.space}]: {a.n_pairs} pairs ({a.n_test} held out), tasks {len(a.task_names)}, "
          f"skipped {[s['task'] for s in a.skipped]}")
    print(f"  PC1 of differences: {d['explained_variance_ratio'][0]:.3f} of variance; r(PC1, d_chars) "
          f"{d['pc1_r_chars']:+.3f} (Spearman {d['pc1_rho_chars']:+.3f}), r(PC1, d_tokens) {d['pc1_r_tokens']:+.3f}; "
          f"PC most correlated with d_chars: PC{d['best_pc_chars']}")
    print(f"  {'method':<11} {'k':>4} {'analogy':>8} {'task acc':>8} {'silhou.':>8} {'|r| PC1-chars':>13}  (held-out pairs)")
    for r in a.methods:
        print(f"  {r['method']:<11} {r['n_components']:>4} {_f(r['analogy_accuracy'], 8)} {_f(r['task_accuracy'], 8)} "
              f"{_f(r['silhouette'], 8)} {_f(r.get('pc1_r_chars'), 13)}")
    c = a.crystals
    if "n_matches" in c:
        print(f"  crystals: {c['n_matches']} quadruples with cosine >= {c['params']['min_cosine']} among "
              f"{c['n_candidate_pairs']} candidate pairs of {c['n_features']} features; Gaussian null with the same "
              f"covariance: {c['null_n_matches']} (top cosine {c['null_top_cosine']}); "
              f"{c['n_parallelograms']} of the top {c['n_reported']} are parallelograms")


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
        res = atoms_pipeline.run(args.model, parse_layers(args.layers), args.out, sae=args.sae, seed=args.seed,
                                sae_space=args.sae_space, max_pairs=args.max_pairs)
    except InputError as e:
        print(f"atoms_study: error: {e}", file=sys.stderr)
        return 2
    for L, r in res.items():
        report(r["atoms"])
        if r["atoms_sae"] is not None:
            report(r["atoms_sae"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
