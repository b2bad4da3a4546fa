"""Benchmark: the layer-update kernels against straightforward references, same process.

(a) Neighbour search, k = 64 nearest tokens of other rows among N = 8,192 tokens x 640 dims (real
    Gemma 3 270M residuals at one layer, held-out text; ``--quick``: 2,048 random vectors): the exact
    blocked GEMM + top-k (:func:`featuregeo.tl.updates.knn_other_rows`) vs brute force, one query at a
    time in float64 with a full sort (:func:`featuregeo.tl.updates.knn_brute_force`); recall must be 1.
(b) Local fits, k = 32: the batched reduced-rank ridge (rank 8) and diagonal fits vs a per-token
    numpy loop (lstsq-free closed forms, one token at a time; timed on 256 tokens and extrapolated),
    identical outputs required (relative error < 1e-3).
Targets from the issue: the whole study <= 20 min on 2 cores and <= 6 GB (see analyses/updates_study.py);
this benchmark reports the search and fit kernels that dominate it.

    flock /work/heavy.lock python benchmarks/bench_updates.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import gb, measure, peak_rss_bytes, set_threads

from featuregeo.tl.updates import fit_diag, fit_lowrank, knn_brute_force, knn_other_rows, prepare, recall


def reference_lowrank(h, D, nbr, rank, ridge, idx):
    """Per token: ridge in primal form on the neighbours, then reduced-rank projection via a full SVD."""
    out = np.empty((len(idx), D.shape[1]))
    for j, i in enumerate(idx):
        H, Y = h[nbr[i]].astype(np.float64), D[nbr[i]].astype(np.float64)
        K = H @ H.T
        lam = ridge * np.trace(K) / K.shape[0]
        B = np.linalg.solve(K + lam * np.eye(K.shape[0]), Y)          # A^T = H^T B
        F = K @ B
        _, s, Vt = np.linalg.svd(F, full_matrices=False)
        V = Vt[:rank].T
        out[j] = V @ (V.T @ (B.T @ (H @ h[i])))
    return out


def reference_diag(h, D, nbr, ridge, idx):
    out = np.empty((len(idx), D.shape[1]))
    for j, i in enumerate(idx):
        H, Y = h[nbr[i]].astype(np.float64), D[nbr[i]].astype(np.float64)
        den = (H * H).sum(0)
        out[j] = (H * Y).sum(0) / (den + ridge * den.mean()) * h[i]
    return out


def real_activations(n_rows: int, seq_len: int, layer: int):
    from featuregeo.io.models import load_model
    from featuregeo.io.update_hooks import read_updates
    from featuregeo.tl.updates import UpdatesParams, heldout_rows

    lm = load_model("default", threads=2)
    p = UpdatesParams(n_rows=n_rows, seq_len=seq_len)
    rows = heldout_rows(lm.tokenizer, p).rows
    a = read_updates(lm, rows)
    h = a.resid[layer + 1][:, 1:].reshape(-1, lm.d_model)
    D = a.resid[layer + 2][:, 1:].reshape(-1, lm.d_model) - h
    return h, D, np.repeat(np.arange(n_rows), seq_len)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layer", type=int, default=9)
    a = ap.parse_args()
    set_threads(2)
    import torch

    torch.set_num_threads(2)
    if a.quick:
        rng = np.random.default_rng(0)
        h = rng.standard_normal((2048, 640)).astype(np.float32)
        D = np.tanh(h) + 0.1 * rng.standard_normal(h.shape).astype(np.float32)
        groups = np.repeat(np.arange(32), 64)
        what = "2,048 random vectors"
    else:
        h, D, groups = real_activations(64, 128, a.layer)
        what = f"8,192 held-out tokens of Gemma 3 270M, layer {a.layer}"
    x = prepare(h, "cosine")
    k = 64
    print(f"(a) k={k} neighbours from other rows, {what}, d={h.shape[1]}")
    m_fast = measure(lambda: knn_other_rows(x, groups, k), repeats=2)
    fast = knn_other_rows(x, groups, k)
    t = time.perf_counter()
    ref = knn_brute_force(x, groups, k)
    t_ref = time.perf_counter() - t
    print(f"    blocked GEMM top-k : {m_fast['seconds']:.2f}s, peak traced {gb(m_fast['peak_bytes'])}")
    print(f"    brute force        : {t_ref:.2f}s   ratio {t_ref / m_fast['seconds']:.0f}x, recall {recall(fast, ref):.4f}")
    nbr = fast[:, :32]
    idx = np.random.default_rng(1).choice(h.shape[0], 256, replace=False)
    print(f"(b) local fits, k=32, on all {h.shape[0]} tokens; reference per token on 256 tokens, extrapolated")
    for name, fn, ref_fn in (
            ("lowrank r8", lambda: fit_lowrank(h, D, nbr, rank=8, ridge=0.01),
             lambda: reference_lowrank(h, D, nbr, 8, 0.01, idx)),
            ("diag", lambda: fit_diag(h, D, nbr, ridge=0.01), lambda: reference_diag(h, D, nbr, 0.01, idx))):
        m = measure(fn)
        T = fn()
        t = time.perf_counter()
        Tr = ref_fn()
        t_ref = (time.perf_counter() - t) * h.shape[0] / len(idx)
        err = np.linalg.norm(T[idx] - Tr) / np.linalg.norm(Tr)
        print(f"    {name:<10}: batched {m['seconds']:.2f}s (peak traced {gb(m['peak_bytes'])}), reference "
              f"~{t_ref:.1f}s, ratio {t_ref / m['seconds']:.0f}x, relative difference {err:.1e}")
    print(f"peak RSS of this process: {gb(peak_rss_bytes())}")


if __name__ == "__main__":
    main()
