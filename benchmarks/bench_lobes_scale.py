"""Benchmark: lobes at 16k and 65k features with sparse (top-k) affinities (issue 16).

(a) 16,384 features x 100,000 blocks at 2% density: the n_clusters sweep (2, 3, 4, 8, ..., 1024) of one
    affinity on its top-k graph (sparse embedding of ``--max-components`` eigenvectors, fast k-means
    above 64 clusters): target <= 3 min (the dense path measured 21 min: embedding 328 s, k-means 947 s).
    The reference in the same run is the dense path (dense affinity, dense eigensolver, full k-means)
    on n_clusters <= ``--ref-max-clusters`` (``--ref``); the fast k-means is compared with full
    ``KMeans(n_init=3)`` on the same embedding at 512 and 1024 clusters (ARI, inertia).
(b) 65,536 features x 100,000 blocks at 2% density: co-occurrence (top-k storage) + the five
    affinities as top-k graphs + the sweep 2..1024 of one affinity: target <= 20 min, <= 8 GB peak RSS.

The firing matrix has planted lobes: features in groups of ``--group-size`` (scattered over the
feature index); each block switches on ``--groups-per-block`` random groups, whose features fire with
probability ``--p-in``; background firings make the density 2%.  The ARI of the sweep's labels with
the planted groups (at n_clusters = number of groups, or the nearest swept value) is printed.

    flock /work/heavy.lock python benchmarks/bench_lobes_scale.py --parts a      # 16k
    flock /work/heavy.lock python benchmarks/bench_lobes_scale.py --parts b      # 65k
    python benchmarks/bench_lobes_scale.py --small                               # about a minute
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import gb, peak_rss_bytes, set_threads
from scipy import sparse

from featuregeo.tl.lobes import AFFINITIES, DEFAULT_N_CLUSTERS, SpectralSweep, affinity, cooccurrence
from featuregeo.tl.lobes.spectral import fast_kmeans


def planted_lobes(n_blocks: int, n_features: int, density: float = 0.02, group_size: int = 64,
                  groups_per_block: int = 8, p_in: float = 0.3, seed: int = 0) -> tuple[sparse.csr_matrix, np.ndarray]:
    """(blocks x features CSR of int32 ones, planted group of each feature)."""
    rng = np.random.default_rng(seed)
    n_groups = n_features // group_size
    perm = rng.permutation(n_features)
    truth = np.empty(n_features, dtype=np.int32)
    truth[perm] = np.arange(n_features) // group_size
    rows, cols = [], []
    step = max(1, (32 * 2**20) // (groups_per_block * group_size))
    for r0 in range(0, n_blocks, step):
        r1 = min(n_blocks, r0 + step)
        g = rng.integers(0, n_groups, (r1 - r0, groups_per_block))
        hit = rng.random((r1 - r0, groups_per_block, group_size), dtype=np.float32) < p_in
        r, a, j = np.nonzero(hit)
        rows.append((r + r0).astype(np.int32))
        cols.append(perm[g[r, a] * group_size + j].astype(np.int32))
    bg = max(0.0, (density * n_features - groups_per_block * group_size * p_in) / n_features)
    n_bg = rng.binomial(n_blocks * n_features, bg)
    rows.append(rng.integers(0, n_blocks, n_bg, dtype=np.int32))
    cols.append(rng.integers(0, n_features, n_bg, dtype=np.int32))
    r, c = np.concatenate(rows), np.concatenate(cols)
    del rows, cols
    m = sparse.csr_matrix((np.ones(r.size, dtype=np.int32), (r, c)), shape=(n_blocks, n_features))
    del r, c
    m.sum_duplicates()
    m.data[:] = 1
    return m, truth


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def truth_ari(sw: SpectralSweep, truth: np.ndarray, index: np.ndarray, n_groups: int) -> str:
    from sklearn.metrics import adjusted_rand_score

    k = min(sw.n_clusters_, key=lambda x: abs(x - n_groups))
    return f"ARI with the {n_groups} planted lobes at n_clusters={k}: {adjusted_rand_score(truth[index], sw.labels_[k]):.3f}"


def part_a(args, ks: list[int]) -> bool:
    from sklearn.metrics import adjusted_rand_score

    n = args.features_a
    f, truth = planted_lobes(args.blocks, n, args.density, args.group_size, args.groups_per_block, args.p_in)
    print(f"(a) {args.blocks} blocks x {n} features, {f.nnz / (f.shape[0] * f.shape[1]):.2%} density, "
          f"{n // args.group_size} planted lobes; {load()}", flush=True)
    t0 = time.perf_counter()
    co = cooccurrence(f, storage="dense")
    t_co = time.perf_counter() - t0
    del f
    t0 = time.perf_counter()
    g = affinity(co, args.kind, graph="topk", top_k=args.top_k)
    t_g = time.perf_counter() - t0
    print(f"    co-occurrence (dense counts) {t_co:.1f} s; {args.kind} top-{args.top_k} graph {t_g:.1f} s "
          f"({g.matrix.nnz} edges)", flush=True)
    t0 = time.perf_counter()
    sw = SpectralSweep(ks, max_components=args.max_components, kmeans="auto", seed=0).fit(g)
    t_sw = time.perf_counter() - t0
    emb = sw.embedding_
    print(f"    sweep n_clusters={ks}: {emb.solver} embedding of {emb.vectors.shape[1]} eigenvectors "
          f"{emb.seconds:.1f} s + k-means {t_sw - emb.seconds:.1f} s = {t_sw:.1f} s [target <= 180 s; dense path "
          f"measured 21 min]; {truth_ari(sw, truth, g.feature_index, n // args.group_size)}; {load()}", flush=True)
    ok = t_sw <= 180
    for k in [k for k in ks if k >= 512]:
        x = np.ascontiguousarray(emb.vectors[:, :min(k, emb.vectors.shape[1])])
        from sklearn.cluster import KMeans

        t0 = time.perf_counter()
        fast = fast_kmeans(x, k, seed=1)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = KMeans(k, n_init=3, random_state=1).fit(x)
        t_full = time.perf_counter() - t0
        print(f"    k-means {k} clusters: fast {t_fast:.1f} s (inertia {fast.inertia_:.5g}) vs full n_init=3 "
              f"{t_full:.1f} s (inertia {full.inertia_:.5g}): ratio {t_full / t_fast:.1f}x, inertia "
              f"{fast.inertia_ / full.inertia_:.4f}x, ARI {adjusted_rand_score(full.labels_, fast.labels_):.3f}",
              flush=True)
    if args.ref:
        ref_ks = [k for k in ks if k <= args.ref_max_clusters]
        t0 = time.perf_counter()
        d = affinity(co, args.kind)
        ref = SpectralSweep(ref_ks, max_components=None, kmeans="full", seed=0).fit(d.matrix, overwrite=True)
        t_ref = time.perf_counter() - t0
        del d
        t0 = time.perf_counter()
        ours = SpectralSweep(ref_ks, max_components=args.max_components, kmeans="auto", seed=0).fit(g)
        t_ours = time.perf_counter() - t0
        aris = ", ".join(f"{k}: {adjusted_rand_score(ref.labels_[k], ours.labels_[k]):.3f}" for k in ref_ks)
        print(f"    reference dense path on n_clusters={ref_ks}: {t_ref:.1f} s (dense affinity + "
              f"{ref.embedding_.solver} embedding {ref.embedding_.seconds:.1f} s + full k-means) vs sparse "
              f"{t_ours:.1f} s: ratio {t_ref / t_ours:.1f}x; ARI dense vs sparse per n_clusters {aris}", flush=True)
    return ok


def part_b(args, ks: list[int]) -> bool:
    n = args.features_b
    t_all = time.perf_counter()
    f, truth = planted_lobes(args.blocks, n, args.density, args.group_size, args.groups_per_block, args.p_in)
    t_gen = time.perf_counter() - t_all
    print(f"(b) {args.blocks} blocks x {n} features, {f.nnz / (f.shape[0] * f.shape[1]):.2%} density, "
          f"{n // args.group_size} planted lobes (generated in {t_gen:.0f} s, not counted); {load()}", flush=True)
    t0 = time.perf_counter()
    co = cooccurrence(f, storage="topk", top_k=args.top_k)
    t_co = time.perf_counter() - t0
    del f
    print(f"    co-occurrence: {co.storage} storage, {co.method} product, {co.pairs.nnz} stored pairs: {t_co:.1f} s, "
          f"RSS so far {gb(peak_rss_bytes())}", flush=True)
    graphs, times = {}, {}
    for kind in AFFINITIES:
        t0 = time.perf_counter()
        graphs[kind] = affinity(co, kind, top_k=args.top_k)
        times[kind] = time.perf_counter() - t0
    t_aff = sum(times.values())
    print(f"    five top-{args.top_k} affinity graphs: {t_aff:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in times.items())})",
          flush=True)
    t0 = time.perf_counter()
    g = graphs[args.kind]
    del graphs
    sw = SpectralSweep(ks, max_components=args.max_components, kmeans="auto", seed=0).fit(g)
    t_sw = time.perf_counter() - t0
    total = t_co + t_aff + t_sw
    rss = peak_rss_bytes()
    print(f"    sweep ({args.kind}) n_clusters={ks}: {sw.embedding_.solver} embedding of "
          f"{sw.embedding_.vectors.shape[1]} eigenvectors {sw.embedding_.seconds:.1f} s + k-means "
          f"{t_sw - sw.embedding_.seconds:.1f} s = {t_sw:.1f} s; {truth_ari(sw, truth, g.feature_index, n // args.group_size)}",
          flush=True)
    print(f"    total co-occurrence + 5 affinities + sweep: {total:.1f} s [target <= 1200 s]; peak RSS {gb(rss)} "
          f"[target <= 8 GB]; {load()}", flush=True)
    return total <= 1200 and rss <= 8e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="reduced sizes for a quick check")
    ap.add_argument("--parts", default="ab")
    ap.add_argument("--blocks", type=int, default=100_000)
    ap.add_argument("--features-a", type=int, default=16_384)
    ap.add_argument("--features-b", type=int, default=65_536)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--groups-per-block", type=int, default=8)
    ap.add_argument("--p-in", type=float, default=0.3)
    ap.add_argument("--kind", default="jaccard", help="the affinity swept")
    ap.add_argument("--top-k", type=int, default=256)
    ap.add_argument("--max-components", type=int, default=256)
    ap.add_argument("--ref", action="store_true", help="(a): also run the dense path on small n_clusters")
    ap.add_argument("--ref-max-clusters", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.small:
        args.blocks, args.features_a, args.features_b, args.group_size = 5000, 2048, 4096, 32
    threads = set_threads(args.threads)
    ks = list(DEFAULT_N_CLUSTERS)
    print(f"lobes scale benchmark: {threads} threads{' (--small: targets apply to the full size only)' if args.small else ''}")
    ok = True
    if "a" in args.parts:
        ok &= part_a(args, [k for k in ks if k < args.features_a // 4])
    if "b" in args.parts:
        ok &= part_b(args, [k for k in ks if k < args.features_b // 4])
    print(f"  process peak RSS {gb(peak_rss_bytes())}")
    print("  PASS" if ok or args.small else "  FAIL")
    return 0 if ok or args.small else 1


if __name__ == "__main__":
    raise SystemExit(main())
