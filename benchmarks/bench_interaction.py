"""Benchmark: the interaction-basis kernels on a small Gemma 3 270M case, against straightforward
references run in the same process (float64 block 6, node layer 5 -> 6).

(a) M' = E[J^T J]: the reference builds each row's full Jacobian with
    ``torch.autograd.functional.jacobian`` (one reverse pass per output) and contracts it; featuregeo's
    exact mode (vmapped vector-Jacobian products with unit cotangents) must agree to ~1e-10; the
    stochastic mode (+-1 sources) is compared against the exact M' for several source counts, with
    its reported relative standard error next to its real error.
(b) Edges (integrated gradients, squared formula, mean baseline, Gauss-Legendre nodes): the reference
    takes one reverse-mode gradient per output feature and output position per node (the loop of the
    original code); featuregeo uses one forward-mode Jacobian-vector product per input feature, vmapped
    over directions and nodes.  They must agree to ~1e-8.
(c) With ``--compile``: the edges of a study-sized pass (float32, 2 rows x 128 tokens, 32 directions,
    3 nodes) eager against ``torch.compile`` (the first compiled call, which compiles, timed apart).

    python benchmarks/bench_interaction.py [--quick] [--rows 2] [--tokens 16] [--k 8] [--steps 4] [--compile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import gb, peak_rss_bytes, set_threads


def reference_m_prime(acts, g) -> np.ndarray:
    import torch

    from featuregeo.tl.interaction import extend

    rows, T, d = acts.shape
    M = np.zeros((d + 1, d + 1))
    for r in range(rows):
        x = extend(torch.as_tensor(acts[r:r + 1], dtype=torch.float64))
        J = torch.autograd.functional.jacobian(g, x)  # [1, T, k, 1, T, d+1]
        J = J.reshape(-1, T, d + 1).numpy()
        M += np.einsum("asj,ask->jk", J, J)
    return M / (rows * T)


def reference_edges(acts, step, bin_, bout, n_in, n_out, steps, base) -> np.ndarray:
    import torch

    from featuregeo.tl.interaction import extend

    Cin = torch.as_tensor(bin_.C[:, :n_in])
    Pin = torch.as_tensor(bin_.P[:, :n_in])
    Cout = torch.as_tensor(bout.C[:, :n_out])
    rows, T, _ = acts.shape
    E = np.zeros((n_out, n_in))
    for r in range(rows):
        x = extend(torch.as_tensor(acts[r:r + 1], dtype=torch.float64))
        b0 = extend(torch.as_tensor(base, dtype=torch.float64))
        fh = ((x - b0) @ Cin)[0]  # [T, n_in]
        A = np.zeros((T, n_out, n_in))
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        for a, wt in zip((nodes + 1) / 2, weights / 2):
            xa = (b0 + float(a) * (x - b0)).requires_grad_(True)
            y = torch.cat([step(xa[..., :-1], xa[..., -1:]), xa[..., -1:]], dim=-1) @ Cout
            for t in range(T):
                for i in range(n_out):
                    gr = torch.autograd.grad(y[0, t, i], xa, retain_graph=True)[0][0]  # [T, d+1]
                    A[t, i] += ((gr @ Pin) * fh).sum(0).detach().numpy() * wt
        E += (A ** 2).sum(0)
    return E / (rows * T)


def compiled_vs_eager(lm, threads: int) -> None:
    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.tl.interaction import edge_matrix, pca_basis, token_rows

    rows = token_rows(lm.tokenizer, 2, 128, split="train")
    acts, bos = section_activations(lm, rows, [5, 6])
    step = block_step(lm, 6, bos[5], 128, dtype="float32")
    b5, b6 = pca_basis(5, acts[5], 1e-9), pca_basis(6, acts[6], 1e-9)
    mean = acts[5].reshape(-1, 640).mean(axis=0, dtype=np.float64)
    kw = dict(n_in=32, n_out=32, steps=3, baseline=mean, batch_size=2, chunk=32, dtype="float32")
    out, secs = {}, {}
    for name, c in (("eager", False), ("compile (first call)", True), ("compiled", True)):
        t = time.perf_counter()
        out[name] = edge_matrix(acts[5], step, b5, b6, compiled=c, **kw)
        secs[name] = time.perf_counter() - t
    dev = np.max(np.abs(out["compiled"] - out["eager"])) / np.max(out["eager"])
    print(f"(c) edges of one pass (2 rows x 128 tokens, 32 directions, 3 nodes, float32): eager {secs['eager']:.1f}s, "
          f"compiled {secs['compiled']:.1f}s (x{secs['eager'] / secs['compiled']:.2f}; the first call, compiling, "
          f"{secs['compile (first call)']:.1f}s), max rel. difference {dev:.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 row x 6 tokens, k 4, 2 steps")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="(c): eager vs torch.compile on a study-sized pass")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.tokens, args.k, args.steps = 1, 6, 4, 2
    set_threads(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from featuregeo.io.interaction_hooks import block_step, section_activations
    from featuregeo.io.models import load_model
    from featuregeo.tl.interaction import (basis_from_m, edge_matrix, extended_step, gram_matrix, m_prime, pca_basis,
                                           token_rows)

    lm = load_model("default", threads=args.threads)
    rows = token_rows(lm.tokenizer, args.rows, args.tokens, split="train")
    acts, bos = section_activations(lm, rows, [5, 6])
    step = block_step(lm, 6, bos[5], args.tokens, dtype="float64")
    nxt = pca_basis(6, acts[6], 1e-9)
    g = extended_step(step, nxt.C, torch.float64)
    n_tok = args.rows * args.tokens
    print(f"case: Gemma 3 270M block 6 in float64, {args.rows} rows x {args.tokens} tokens ({n_tok} positions), "
          f"next-layer basis dim {nxt.n_kept}")

    t = time.perf_counter()
    ref = reference_m_prime(acts[5], g)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    exact, _, n_exact = m_prime(acts[5], g, mode="exact", dtype="float64", batch_size=args.rows)
    t_exact = time.perf_counter() - t
    dev = np.linalg.norm(exact - ref) / np.linalg.norm(ref)
    print(f"(a) M' exact: reference (autograd.functional.jacobian) {t_ref:.2f}s, featuregeo exact {t_exact:.2f}s "
          f"(x{t_ref / t_exact:.1f}), {n_exact} products per row, rel. difference {dev:.2e}")
    print(f"    {'sources':>7} {'seconds':>8} {'x faster than exact':>19} {'real rel. error':>15} {'reported rel. s.e.':>18}")
    for s in (2, 4, 16, 64):
        t = time.perf_counter()
        est, se, _ = m_prime(acts[5], g, mode="stochastic", n_sources=s, dtype="float64", batch_size=args.rows, seed=3)
        ts = time.perf_counter() - t
        err = np.linalg.norm(est - exact) / np.linalg.norm(exact)
        print(f"    {s:>7} {ts:>8.2f} {t_exact / ts:>19.1f} {err:>15.3g} {se:>18.3g}")
    G, n = gram_matrix(acts[5])
    b5 = basis_from_m(5, G, n, exact, 1e-9, 1e-9, jacobian="exact")
    k = min(args.k, b5.n_kept, nxt.n_kept)
    mean = acts[5].reshape(-1, acts[5].shape[-1]).mean(axis=0, dtype=np.float64)
    t = time.perf_counter()
    Eref = reference_edges(acts[5], step, b5, nxt, k, k, args.steps, mean)
    t_eref = time.perf_counter() - t
    t = time.perf_counter()
    E = edge_matrix(acts[5], step, b5, nxt, n_in=k, n_out=k, steps=args.steps, dtype="float64", batch_size=args.rows,
                    baseline=mean, rule="gauss")
    t_e = time.perf_counter() - t
    dev = np.max(np.abs(E - Eref)) / np.max(np.abs(Eref))
    print(f"(b) edges {k}x{k}, {args.steps} steps: reference (reverse mode per output and position) {t_eref:.2f}s, "
          f"featuregeo (forward mode per input feature) {t_e:.2f}s (x{t_eref / t_e:.1f}), max rel. difference {dev:.2e}")
    if args.compile:
        compiled_vs_eager(lm, args.threads)
    print(f"peak RSS {gb(peak_rss_bytes())}")
    ok = dev < 1e-8
    print("PASS" if ok else "FAIL: edges differ from the reference")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
