"""Benchmark: covariance spectrum of a Gemma Scope 65k-shaped cloud (65,536 x 2,304 float32).

Targets (issue 2): <= 20 s on 2 cores, peak extra memory <= 2x the matrix; the GEMM rate reached
as a fraction of this machine's peak numpy float32 matmul rate.  Reference: ``np.cov`` + ``eigvalsh``.

    python benchmarks/bench_galaxy_spectrum.py [--n 65536] [--d 2304]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import gb, gemm_peak_gflops, measure, set_threads

from featuregeo.tl.galaxy import covariance, eigenspectrum, fit_power_law


def reference(x: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--d", type=int, default=2304)
    args = ap.parse_args()
    threads = set_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    x *= (np.arange(1, args.d + 1, dtype=np.float32) ** -0.25)
    matrix = x.nbytes
    peak = gemm_peak_gflops()
    out = {}

    def ours():
        out["ev"] = eigenspectrum(covariance(x)[0])

    def ref():
        out["ref"] = reference(x)

    import time

    f = measure(ours, repeats=2)
    r = measure(ref, repeats=1)
    ev, ref_ev = out["ev"], out["ref"]
    t0 = time.perf_counter()
    covariance(x)
    t_cov = time.perf_counter() - t0
    # X^T X by syrk computes one triangle: n*d*(d+1) flops (half of a full GEMM's 2*n*d^2)
    rate = args.n * args.d * (args.d + 1) / t_cov / 1e9
    np.testing.assert_allclose(ev[:200], ref_ev[:200], rtol=1e-3)
    print(f"spectrum {args.n} x {args.d} float32 ({gb(matrix)} matrix), {threads} threads")
    print(f"  featuregeo: {f['seconds']:.2f} s, peak extra memory {gb(f['peak_bytes'])} "
          f"({f['peak_bytes'] / matrix:.2f}x matrix) [target <= 20 s, <= 2x]")
    print(f"  reference np.cov+eigvalsh: {r['seconds']:.2f} s, peak {gb(r['peak_bytes'])} "
          f"({r['peak_bytes'] / matrix:.2f}x matrix)")
    print(f"  speed ratio reference/featuregeo: {r['seconds'] / f['seconds']:.2f}x")
    print(f"  covariance alone {t_cov:.2f} s: {rate:.1f} GFLOP/s (syrk flops n*d*(d+1)) vs peak numpy "
          f"sgemm {peak:.1f} GFLOP/s -> {rate / peak:.2f} of peak")
    print(f"  slope(11..150) = {fit_power_law(ev).slope:.4f}")
    ok = f["seconds"] <= 20 and f["peak_bytes"] <= 2 * matrix
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
