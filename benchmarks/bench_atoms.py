"""Benchmark: crystal search among 16,384 x 2,304 feature vectors with planted crystals (issue 5, section 8).

Targets: the default ANN search (k-NN candidate pairs, differences matched in a random projection,
exact rescoring) finishes in <= 2 min with recall >= 0.9 of the planted crystals.  Reference: the
exhaustive search (all pairs of features, all pairs of pairs, exact) on a subset small enough for it to
finish; both are run on that subset (speed ratio, and the ANN result must be contained in the exhaustive
one), and the exhaustive time is extrapolated to the full size (it grows as n^4).

    python benchmarks/bench_atoms.py                 # full size
    python benchmarks/bench_atoms.py --n 4096        # smaller
    python benchmarks/bench_atoms.py --quick         # a smoke run: 2,048 x 256, subset 96 (seconds)
"""

from __future__ import annotations

import argparse
import time

from _common import gb, measure, peak_rss_bytes, set_threads

from featuregeo.tl.atoms import (
    CrystalParams,
    crystal_recall,
    find_crystals,
    planted_crystals,
)
from featuregeo.tl.atoms.crystals import planted_clustered_crystals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=2304)
    ap.add_argument("--crystals", type=int, default=200)
    ap.add_argument("--subset", type=int, default=200, help="features in the exhaustive reference")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--quick", action="store_true", help="a smoke run at a small size")
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.crystals, args.subset = 2048, 256, 40, 96
    set_threads(args.threads)

    X, quads = planted_crystals(n=args.n, d=args.d, n_crystals=args.crystals, seed=0)
    print(f"cloud {args.n} x {args.d} float32 ({gb(X.nbytes)}), {len(quads)} planted crystals "
          f"(every 4th a trapezoid with one side twice as long)")
    box = {}

    def ann():
        box["res"] = find_crystals(X, CrystalParams(backend=args.backend, max_results=1000))

    m = measure(ann)
    res = box["res"]
    recall = crystal_recall(res, quads)
    print(f"ANN search ({res.backend}): {m['seconds']:.1f} s, peak traced {gb(m['peak_bytes'])} "
          f"({m['peak_bytes'] / X.nbytes:.2f}x the matrix); {res.n_candidate_pairs} candidate pairs, "
          f"{res.n_matches} matches; recall {recall:.3f}  [target <= 120 s, recall >= 0.9]")

    # exhaustive reference on a subset holding some whole planted crystals
    k = max(1, args.subset // 8)
    planted_ids = [i for q in quads[:k] for i in q]
    in_any = {i for q in quads for i in q}
    keep = planted_ids + [i for i in range(args.n) if i not in in_any][: args.subset - len(planted_ids)]
    idx = {old: new for new, old in enumerate(keep)}
    sub_quads = [tuple(idx[i] for i in q) for q in quads[:k]]
    Xs = X[keep]
    t0 = time.perf_counter()
    exh = find_crystals(Xs, CrystalParams(mode="exhaustive", max_results=10_000_000))
    t_exh = time.perf_counter() - t0
    t0 = time.perf_counter()
    ann_s = find_crystals(Xs, CrystalParams(backend=args.backend, max_results=10_000_000))
    t_ann = time.perf_counter() - t0
    corners = lambda r: {tuple(sorted(q)) for q in r.canonical_set()}  # noqa: E731  (one result per 4 corners)
    contained = corners(ann_s) <= corners(exh)
    extrap = t_exh * (args.n / len(keep)) ** 4
    print(f"subset of {len(keep)} features ({len(sub_quads)} planted): exhaustive {t_exh:.1f} s "
          f"(recall {crystal_recall(exh, sub_quads):.2f}, {exh.n_matches} matches), ANN {t_ann:.2f} s "
          f"(recall {crystal_recall(ann_s, sub_quads):.2f}); speed ratio {t_exh / t_ann:.1f}x; ANN subset of exhaustive: "
          f"{contained}")
    print(f"exhaustive extrapolated to {args.n} features (n^4): {extrap:.3g} s = {extrap / 86400:.3g} days; "
          f"ratio vs ANN {extrap / m['seconds']:.3g}x")
    hard_cases(args)
    print(f"peak RSS {gb(peak_rss_bytes())}")


def hard_cases(args) -> None:
    """Issue 11: corners inside tight 12-member groups of split features, and side length 3.0."""
    old = CrystalParams(backend=args.backend, max_results=1000, min_rung=0.5, duplicate_cosine=1.0, duplicate_depth=0)
    new = CrystalParams(backend=args.backend, max_results=1000)
    nc = max(4, args.crystals // 4)
    Xc, qc, groups = planted_clustered_crystals(n=args.n, d=args.d, n_crystals=nc, cluster_size=12, seed=1)
    Xs, qs = planted_crystals(n=args.n, d=args.d, n_crystals=args.crystals, side=3.0, trapezoid_every=0, seed=2)
    for name, X, q, g in (("corners in 12-member split-feature groups", Xc, qc, groups),
                          ("side length 3.0", Xs, qs, None)):
        t0 = time.perf_counter()
        r_new = find_crystals(X, new)
        t_new = time.perf_counter() - t0
        r_old = find_crystals(X, old)
        print(f"hard case, {name} ({X.shape[0]} x {X.shape[1]}, {len(q)} planted): recall {crystal_recall(r_new, q, g):.3f} "
              f"in {t_new:.1f} s (previous defaults: {crystal_recall(r_old, q, g):.3f})")


if __name__ == "__main__":
    main()
