"""Shared helpers for benchmarks: timing, peak memory, the machine's matmul rate."""

from __future__ import annotations

import os
import resource
import time
import tracemalloc

import numpy as np


def set_threads(n: int | None = None) -> int:
    n = n or os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    return n


def measure(fn, repeats: int = 1) -> dict:
    """Best wall time of ``fn()`` over ``repeats`` untraced runs, then its peak traced allocation
    (numpy buffers are traced by tracemalloc) in one more run; tracing slows code, so it is not timed."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"seconds": best, "peak_bytes": peak}


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gemm_peak_gflops(n: int = 4096, repeats: int = 3) -> float:
    """Best float32 matmul rate (GFLOP/s) numpy reaches on this machine (n x n @ n x n)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


CHROMIUM = "/usr/bin/chromium"


def open_atlas(playwright, index):
    """Open an atlas ``index`` (Path) in headless chromium and wait until its first frame is painted
    (two animation frames after ``atlas.ready``); returns ``(browser, page, wall seconds)``."""
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                  args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
    page = b.new_page(viewport={"width": 1200, "height": 800}, bypass_csp=True)
    t0 = time.perf_counter()
    page.goto(index.as_uri())
    page.wait_for_function("window.atlas && window.atlas.ready", timeout=300_000, polling=50)
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return b, page, time.perf_counter() - t0
