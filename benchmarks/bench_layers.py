"""Benchmark: the layer-comparison kernels against straightforward references, same process.

(a) StructLens trees of 19 layers x 32 sentences x 64 tokens: the closed form (nearest earlier token,
    vectorised) vs Chu-Liu/Edmonds on every sentence's full score matrix (identical trees required).
(b) Zhang-Shasha tree edit distance on 64-token trees: numba-compiled kernel vs the same dynamic
    programme in pure Python (identical distances required).
(c) linear CKA between all pairs of 19 representations of 2,048 tokens x 640 dims: one float32 Gram
    per representation and one Gram of Grams vs the textbook float64 formula per pair
    (``||Yc^T Xc||^2 / (||Xc^T Xc|| ||Yc^T Yc||)``, centring inside each call; timed on 10 pairs and
    extrapolated).

    python benchmarks/bench_layers.py [--small]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import gb, measure, peak_rss_bytes, set_threads

from featuregeo.tl.layers import cka_matrix, sentence_trees, structlens_tree, tree_edit_distance


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    a = ap.parse_args()
    set_threads()
    rng = np.random.default_rng(0)
    R, S, T, d = (19, 32, 64, 640) if not a.small else (6, 8, 32, 128)
    # a residual-stream-like stack: each layer adds a random update to the previous one
    acts = np.cumsum(rng.standard_normal((R, S, T, d), dtype=np.float32), axis=0)

    heads = None

    def fast_trees():
        nonlocal heads
        heads = sentence_trees(acts)

    m1 = measure(fast_trees)
    t0 = time.perf_counter()
    ref = np.stack([np.stack([structlens_tree(acts[r, s], method="edmonds") for s in range(S)]) for r in range(R)])
    t_ref = time.perf_counter() - t0
    assert np.array_equal(ref, heads)
    print(f"(a) trees {R}x{S}x{T}: closed form {m1['seconds']:.3f}s, Edmonds {t_ref:.3f}s, "
          f"ratio {t_ref / m1['seconds']:.1f}x, identical trees; peak {gb(m1['peak_bytes'])}")

    pairs = [(heads[r, s], heads[r + 1, s]) for r in range(R - 1) for s in range(min(S, 4))]
    tree_edit_distance(*pairs[0])  # compile
    t0 = time.perf_counter()
    fast = [tree_edit_distance(x, y) for x, y in pairs]
    t_fast = time.perf_counter() - t0
    n_ref = min(len(pairs), 12)
    t0 = time.perf_counter()
    slow = [tree_edit_distance(x, y, use_numba=False) for x, y in pairs[:n_ref]]
    t_slow = (time.perf_counter() - t0) / n_ref * len(pairs)
    assert slow == fast[:n_ref]
    print(f"(b) TED of {len(pairs)} pairs of {T}-token trees: numba {t_fast:.3f}s "
          f"({t_fast / len(pairs) * 1e3:.2f} ms/pair), pure Python {t_slow:.2f}s (extrapolated from {n_ref}), "
          f"ratio {t_slow / t_fast:.0f}x")

    n = 2048 if not a.small else 256
    reps = [acts[r].reshape(-1, d)[:n] for r in range(R)]
    out = {}

    def fast_cka():
        out["m"] = cka_matrix(reps)

    m3 = measure(fast_cka)
    pairs = [(i, j) for i in range(R) for j in range(i + 1, R)]
    n_ref = min(len(pairs), 10)
    t0 = time.perf_counter()
    err = 0.0
    for i, j in pairs[:n_ref]:
        v = reference_cka(reps[i].astype(np.float64), reps[j].astype(np.float64))
        err = max(err, abs(v - out["m"][i, j]))
    t_ref = (time.perf_counter() - t0) / n_ref * len(pairs)
    print(f"(c) CKA {R}x{R} of {n}x{d}: featuregeo {m3['seconds']:.2f}s, reference {t_ref:.2f}s (extrapolated from "
          f"{n_ref} of {len(pairs)} pairs), ratio {t_ref / m3['seconds']:.1f}x, max |diff| {err:.1e}; "
          f"peak {gb(m3['peak_bytes'])}")
    print(f"peak RSS {gb(peak_rss_bytes())}")


if __name__ == "__main__":
    main()
