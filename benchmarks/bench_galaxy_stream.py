"""Benchmark: the whole default galaxy analysis of a 1,048,576 x 2,304 decoder stored in a safetensors file.

The child process runs ``featuregeo.tl.galaxy.analyze_cloud(load_cloud(file), GalaxyParams())``:
the streamed covariance (with the entropy subsample drawn in the same pass), the isotropic
Gaussian null of the same shape, and the clustering entropy (10 repeats of 5,000 rows).

Targets (issues 2 and 10): peak RSS <= 4 GB on 2 cores for float16 (default) or float32 storage
(the entropy step used to materialise every row as float32, ~9.7 GB).  The file (~4.8 GB for the
default shape in float16) is written to --dir (default: the system temp dir; check free space) and
deleted afterwards unless --keep.  The analysis runs in a child process so its peak RSS is its own.
Reference: load the tensor and ``np.cov`` + ``eigvalsh`` in memory — run on the first --ref-rows
rows (the full matrix does not fit in memory that way), against featuregeo's covariance on the same rows.

    python benchmarks/bench_galaxy_stream.py [--n 1048576] [--d 2304] [--dtype float16]
    python benchmarks/bench_galaxy_stream.py --n 65536 --d 256 --ref-rows 8192     # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def write_file(path: Path, n: int, d: int, dtype: str, key: str = "W_dec") -> None:
    """Write a safetensors file chunk by chunk (never holding the matrix)."""
    code = {"float16": "F16", "float32": "F32"}[dtype]
    item = np.dtype(dtype).itemsize
    header = json.dumps({key: {"dtype": code, "shape": [n, d], "data_offsets": [0, n * d * item]}}).encode()
    header += b" " * (-len(header) % 8)
    tmp = path.with_suffix(".partial")
    scales = (np.arange(1, d + 1, dtype=np.float32) ** -0.2).astype(np.float32)
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for s in range(0, n, 65536):
            rows = min(65536, n - s)
            x = np.random.default_rng([7, s]).standard_normal((rows, d), dtype=np.float32) * scales
            fh.write(x.astype(dtype).tobytes())
    tmp.replace(path)


class _Prefix:
    def __init__(self, reader, n):
        self._r, self.shape, self.dtype = reader, (n, reader.shape[1]), reader.dtype

    def read(self, start, stop):
        return self._r.read(start, stop)


def child(path: str, n_rows: int | None) -> None:
    sys.path.insert(0, str(HERE))
    from _common import set_threads

    set_threads()
    from featuregeo.core.data import FeatureCloud
    from featuregeo.io import load_cloud
    from featuregeo.tl.galaxy import GalaxyParams, analyze_cloud, covariance, eigenspectrum

    t0 = time.perf_counter()
    cloud = load_cloud(path)  # the loader users get: streamed, nothing materialised
    if n_rows:  # a prefix of the same file, through the same reader: the covariance only
        cloud = FeatureCloud(_Prefix(cloud._reader, n_rows), layer=0)
        cov, n = covariance(cloud, chunk_rows=16384)
        ev = eigenspectrum(cov)
        out = {"n": n, "top": ev[:5].tolist()}
    else:  # the whole default galaxy analysis: covariance + null + entropy
        rec = analyze_cloud(cloud, GalaxyParams())
        out = {"n": rec.n_features, "top": rec.eigenvalues[:5].tolist(), "slope": rec.slope,
               "null_slope": rec.null_slope, "entropy_excess": rec.entropy.excess,
               "materialised": cloud.is_materialised}
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))


def run_child(path: Path, n_rows: int | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path)] + (["--rows", str(n_rows)] if n_rows else []),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1048576)
    ap.add_argument("--d", type=int, default=2304)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--ref-rows", type=int, default=131072)
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--child")
    ap.add_argument("--rows", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.rows)
        return 0
    path = Path(args.dir) / f"featuregeo_bench_{args.n}x{args.d}_{args.dtype}.safetensors"
    if not path.exists():
        t0 = time.perf_counter()
        write_file(path, args.n, args.d, args.dtype)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
    try:
        full = run_child(path)
        sub = run_child(path, args.ref_rows)
        # reference, same process: load the rows and np.cov
        from safetensors import safe_open

        t0 = time.perf_counter()
        with safe_open(str(path), framework="numpy") as fh:
            x = fh.get_slice("W_dec")[: args.ref_rows].astype(np.float32)
        ref_ev = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
        t_ref = time.perf_counter() - t0
        ref_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert np.allclose(sub["top"], ref_ev[:5], rtol=1e-3), (sub["top"], ref_ev[:5])
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    print(f"default galaxy analysis (covariance + null + entropy) of {args.n} x {args.d} {args.dtype} from safetensors")
    print(f"  featuregeo: {full['seconds']:.1f} s, peak RSS {full['peak_rss'] / 1e9:.2f} GB [target <= 4 GB]; "
          f"slope(11..150) {full['slope']:.4f}, null {full['null_slope']:.4f}, entropy excess "
          f"{full['entropy_excess']:.1f} nats; rows materialised: {full['materialised']}")
    print(f"  covariance of the first {args.ref_rows} rows: featuregeo {sub['seconds']:.2f} s (peak RSS "
          f"{sub['peak_rss'] / 1e9:.2f} GB) vs reference load+np.cov+eigvalsh {t_ref:.2f} s (peak RSS "
          f"{ref_rss / 1e9:.2f} GB): ratio {t_ref / sub['seconds']:.2f}x")
    ok = full["peak_rss"] <= 4e9 and not full["materialised"]
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
