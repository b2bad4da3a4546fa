"""Galaxy on one Gemma Scope-shaped layer (16,384 x 2,304) with the honest statistics, against the previous code.

Prints, for the current code (bias-corrected slope with its row-bootstrap interval, entropy with all three nulls) and for the
code path before issue 11 (t-interval, entropy with one Gaussian null, 10 repeats; run from ``git archive``
of ``--old-commit`` in a subprocess on the same data), the wall time, peak RSS, the slope, its interval
and whether the interval covers the planted exponent.  Target: the new path <= 30 s on 2 cores.

    PYTHONPATH=. flock /work/heavy.lock python benchmarks/bench_galaxy_honest.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits(2)
from featuregeo.core.data import FeatureCloud
from featuregeo.tl.galaxy import GalaxyParams, analyze_cloud
x = np.load(sys.argv[1])
t0 = time.perf_counter()
kw = json.loads(sys.argv[2])
rec = analyze_cloud(FeatureCloud(x, layer=0), GalaxyParams(**kw))
out = {"seconds": time.perf_counter() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "slope": rec.slope, "ci": list(rec.slope_ci), "curvature": getattr(rec, "curvature", None),
       "corrected": getattr(rec, "slope_corrected", None), "sample_ci": getattr(rec, "slope_sample_ci", None),
       "excess": rec.entropy.excess if rec.entropy else None,
       "excess_gaussian": getattr(rec.entropy, "excess_gaussian", None) if rec.entropy else None}
print(json.dumps(out))
"""


def planted(n: int, d: int, alpha: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.arange(1, d + 1, dtype=float) ** -alpha
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return ((rng.standard_normal((n, d)) * np.sqrt(ev)) @ q.T).astype(np.float32)


def run(pythonpath: str, data: Path, kw: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    # run from the data's directory: "python -c" puts the working directory first on sys.path, which
    # would shadow PYTHONPATH with the worktree's own featuregeo
    out = subprocess.run([sys.executable, "-c", CHILD, str(data), json.dumps(kw)], env=env, capture_output=True,
                         text=True, check=True, cwd=str(data.parent))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4,096 x 576 instead of 16,384 x 2,304")
    ap.add_argument("--old-commit", default="5f2a776", help="the code path before issue 11")
    ap.add_argument("--alpha", type=float, default=0.53)
    a = ap.parse_args()
    n, d = (4096, 576) if a.quick else (16384, 2304)
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, planted(n, d, a.alpha))
        old = Path(tmp) / "old"
        old.mkdir()
        arch = subprocess.run(["git", "-C", str(root), "archive", a.old_commit, "featuregeo"], capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=arch, check=True)
        t0 = time.perf_counter()
        new = run(str(root), data, {})
        old_res = run(str(old), data, {})
    print(f"galaxy, one layer {n} x {d}, planted exponent -{a.alpha}, 2 threads (total {time.perf_counter() - t0:.0f}s)")
    for name, r in (("new (row bootstrap 50 + bias correction, 2 simulated clouds + 3 entropy nulls, 20 repeats)", new), (f"old ({a.old_commit}: t-interval, 1 null)", old_res)):
        cover = r["ci"][0] <= -a.alpha <= r["ci"][1]
        print(f"  {name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, slope {r['slope']:.4f} "
              f"interval [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] covers truth: {cover}; corrected slope {r['corrected']}; "
              f"sample-slope interval {r['sample_ci']}; curvature {r['curvature']}; "
              f"entropy excess {r['excess']} (over Gaussian only: {r['excess_gaussian']})")
    print(f"  code paths: new from {root}, old from git archive {a.old_commit}")
    print(f"  ratio new/old time: {new['seconds'] / old_res['seconds']:.2f}; target new <= 30 s: "
          f"{'met' if new['seconds'] <= 30 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
