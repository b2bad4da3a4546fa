"""Benchmark: the feature atlas at Gemma Scope 65k scale (issue 6, part 2).

A synthetic layer of 65,536 decoder rows x 2,304 dims (planted clusters, so the map has structure),
lobe labels for n_clusters 2..64, labels on 10% of the features and 2,000 crystals, exported with
the PCA layout (``--layout umap`` to try UMAP).  Printed:

* export seconds and output size (``data/layer_0.js``, ``features.parquet``, whole site);
* page load -> first rendered frame in headless chromium (``window.atlas.loadMs``), the number of
  rendered points, and the time to pick the point under the cursor;
* the same per-feature data written the straightforward way — a JSON list of one object per feature
  plus an SVG with one ``<circle>`` per feature — its write time, size and chromium load time, and
  the ratios (reference / atlas).

    python benchmarks/bench_atlas.py                 # 65,536 features
    python benchmarks/bench_atlas.py --n 16384 --d 2304 --layout umap
    python benchmarks/bench_atlas.py --n 4096 --d 256           # quick
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import gb, peak_rss_bytes, set_threads

from featuregeo.atlas import (AtlasInputs, AtlasParams, Crystal, CrystalsInput, LayerInputs, LobesInput, build)
from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.data import FeatureCloud, Suite



def synthetic(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d), dtype=np.float32)
    x = centres[rng.integers(0, 64, n)]
    x += 1.5 * rng.standard_normal((n, d), dtype=np.float32)
    return x


def make_inputs(n: int, seed: int = 0) -> AtlasInputs:
    """Lobes for k = 2..64, labels on 10% of the features (with markup) and 2,000 crystals, as typed inputs."""
    rng = np.random.default_rng(seed)
    ks = (2, 4, 8, 16, 32, 64)
    lobes = LobesInput(feature_ids=np.arange(n), labels={"phi": {k: rng.integers(0, k, n).astype(np.int32) for k in ks}})
    ids = rng.choice(n, n // 10, replace=False)
    labels = {int(i): f"synthetic feature {i} <b>&</b>" for i in ids}
    q = rng.integers(0, n, (2000, 4))
    crystals = CrystalsInput([Crystal(rank=r + 1, a=int(a), b=int(b), c=int(c), d=int(e), cosine=0.9,
                                      kind="parallelogram", length_ratio=1.0, score=1 - r / 2000)
                              for r, (a, b, c, e) in enumerate(q)])
    return AtlasInputs({0: LayerInputs(lobes=lobes, crystals=crystals, labels=labels)})


def reference_export(x2: np.ndarray, ids, norms, lobes, labels: dict, out: Path) -> float:
    """One JSON object per feature and one SVG circle per feature: the straightforward export."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    recs = [{"id": int(i), "x": float(a), "y": float(b), "norm": float(nm), "lobe": int(lb), "label": labels.get(int(i))}
            for i, (a, b), nm, lb in zip(ids, x2, norms, lobes)]
    (out / "features.json").write_text(json.dumps(recs))
    lo, hi = x2.min(0), x2.max(0)
    p = (x2 - lo) / np.maximum(hi - lo, 1e-9) * 780 + 10
    circles = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.5" fill="hsl({(lb * 137) % 360},60%,50%)"/>'
                      for (a, b), lb in zip(p, lobes))
    (out / "index.html").write_text('<!DOCTYPE html><html><body><svg width="800" height="800">' + circles +
                                    '</svg><script>window.atlas={ready:true,loadMs:performance.now(),'
                                    'renderedCount:document.querySelectorAll("circle").length}</script></body></html>')
    return time.perf_counter() - t0


def load_in_chromium(index: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from _common import open_atlas

    with sync_playwright() as p:
        # two animation frames after ready the first frame has been laid out and painted (SVG: all circles)
        b, page, wall = open_atlas(p, index)
        res = page.evaluate("({loadMs: atlas.loadMs, n: atlas.renderedCount, renderer: atlas.renderer || 'svg'})")
        res["wall_s"] = wall
        if res["renderer"] != "svg":
            res["timings"] = page.evaluate("atlas.timings")
            res["pick_ms"] = page.evaluate("""() => {  // hover = grid pick + overlay redraw, 200 moves
                const o = document.getElementById('overlay'), r = o.getBoundingClientRect(), t = performance.now();
                for (let k = 0; k < 200; k++) o.dispatchEvent(new MouseEvent('mousemove',
                    {clientX: r.left + 50 + 3 * k, clientY: r.top + 80 + 2 * k, bubbles: true}));
                return (performance.now() - t) / 200; }""")
            res["zoom_frame_ms"] = page.evaluate("""() => new Promise(done => {
                const o = document.getElementById('overlay'), r = o.getBoundingClientRect(), t = performance.now();
                o.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: r.left + 300, clientY: r.top + 300,
                                                        bubbles: true, cancelable: true}));
                requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t))); })""")
        b.close()
    return res


def size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--d", type=int, default=2304)
    ap.add_argument("--layout", default="pca", choices=["pca", "umap", "tsne"])
    ap.add_argument("--keep", help="write into this directory and keep it")
    args = ap.parse_args()
    set_threads()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_atlas_"))
    if root.exists() and args.keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        x = synthetic(args.n, args.d)
        inputs = make_inputs(args.n)
        suite = Suite([0], lambda layer: FeatureCloud.from_array(x, layer, source="synthetic"), name="synthetic")
        out = root / "atlas"
        params = AtlasParams(layout=args.layout)
        t0 = time.perf_counter()
        with Checkpoint(out / ".checkpoint") as ck:
            res = build(suite, params, out, inputs=inputs, checkpoint=ck)
        export_s = time.perf_counter() - t0
        print(f"atlas export ({args.n:,} x {args.d:,}, layout {args.layout}): {export_s:.1f} s; "
              f"layer data {size(out / 'data' / 'layer_0.js') / 1e6:.2f} MB, features.parquet "
              f"{size(out / 'features.parquet') / 1e6:.2f} MB, site {size(out) / 1e6:.2f} MB "
              f"(bytes per feature in the page: {size(out / 'data' / 'layer_0.js') / args.n:.1f})")
        t0 = time.perf_counter()
        with Checkpoint(out / ".checkpoint") as ck:
            build(suite, params, out, inputs=inputs, checkpoint=ck)
            assert ck.reused == ["layer_0"]
        print(f"re-export (resumed, layer reused): {time.perf_counter() - t0:.1f} s")
        page = load_in_chromium(out / "index.html")
        print(f"chromium: {page['n']:,} points rendered with {page['renderer']}; load -> first frame "
              f"{page['loadMs'] / 1e3:.2f} s (wall, to painted: {page['wall_s']:.2f} s); pick+overlay {page.get('pick_ms', 0):.2f} ms "
              f"per mouse move; zoom to next frame {page.get('zoom_frame_ms', 0):.0f} ms")
        tm = page.get("timings", {})
        if tm:
            print(f"  page timings (ms since navigation): atlas.js start {tm['scriptStart']:.0f}, layer requested "
                  f"{tm.get('request_0', 0):.0f}, layer decoded + grid built {tm.get('decoded_0', 0):.0f}, "
                  f"first frame {page['loadMs']:.0f}")

        import pyarrow.parquet as pq

        t = pq.read_table(out / "features.parquet", columns=["id", "x", "y", "norm", "lobe_8", "label"]).to_pandas()
        labels = {int(i): s for i, s in zip(t.id, t.label) if s is not None}
        ref_dir = root / "reference"
        ref_s = reference_export(t[["x", "y"]].to_numpy(), t.id.to_numpy(), t.norm.to_numpy(), t.lobe_8.to_numpy(),
                                 labels, ref_dir)
        ref_page = load_in_chromium(ref_dir / "index.html")
        atlas_page_bytes = size(out / "data" / "layer_0.js") + size(out / "index.html") + size(out / "assets")
        ref_bytes = size(ref_dir)
        print(f"reference (JSON records + SVG circles): write {ref_s:.1f} s (serialisation only, no layout), "
              f"{ref_bytes / 1e6:.2f} MB; chromium load -> parsed {ref_page['loadMs'] / 1e3:.2f} s "
              f"(wall, to painted: {ref_page['wall_s']:.2f} s), {ref_page['n']:,} circles")
        print(f"ratio reference/atlas: page bytes {ref_bytes / atlas_page_bytes:.2f}x, navigation -> painted "
              f"(wall) {ref_page['wall_s'] / page['wall_s']:.2f}x")
        print(f"atlas layers: {[(la.layer, la.n_features) for la in res.layers]}; "
              f"peak RSS {gb(peak_rss_bytes())} (timings on a shared, contended 2-core machine are noisy)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
