"""Benchmark: streamed covariance of a 1,048,576 x 2,304 decoder stored in a safetensors file.

Targets (issue 2): peak RSS <= 4 GB and <= 5 min on 2 cores, for float16 (default) or float32
storage.  The file is written once to --dir (default: the system temp dir) and reused.  The
analysis runs in a child process so its peak RSS is its own.  Reference: load the tensor and
``np.cov`` + ``eigvalsh`` in memory — run on the first --ref-rows rows (the full matrix does not
fit in memory that way), against featuregeo on the same rows.

    python benchmarks/bench_galaxy_stream.py [--n 1048576] [--d 2304] [--dtype float16]
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
    from featuregeo.tl.galaxy import covariance, eigenspectrum, fit_power_law
    from featuregeo.io import load_cloud

    t0 = time.perf_counter()
    cloud = load_cloud(path)  # the loader users get: streamed, nothing materialised
    if n_rows:  # a prefix of the same file, through the same reader
        cloud = FeatureCloud(_Prefix(cloud._reader, n_rows), layer=0)
    cov, n = covariance(cloud, chunk_rows=16384)
    ev = eigenspectrum(cov)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": dt, "peak_rss": rss, "n": n, "slope": fit_power_law(ev).slope,
                      "top": ev[:5].tolist()}))


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
    print(f"streamed covariance of {args.n} x {args.d} {args.dtype} from safetensors")
    print(f"  featuregeo: {full['seconds']:.1f} s, peak RSS {full['peak_rss'] / 1e9:.2f} GB "
          f"[target <= 300 s, <= 4 GB]; slope(11..150) {full['slope']:.4f}")
    print(f"  on the first {args.ref_rows} rows: featuregeo {sub['seconds']:.2f} s (peak RSS {sub['peak_rss'] / 1e9:.2f} GB)"
          f" vs reference load+np.cov+eigvalsh {t_ref:.2f} s (peak RSS {ref_rss / 1e9:.2f} GB): "
          f"ratio {t_ref / sub['seconds']:.2f}x")
    ok = full["seconds"] <= 300 and full["peak_rss"] <= 4e9
    print("  PASS" if ok else "  FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
