"""Benchmark: harvest throughput vs the bare forward pass of the same model and batches, and the cost
of feature dashboards.

Targets: harvest tokens/s >= 80% of the bare base-model forward pass reading the same layers, at
batch 16 x 256 (issue 3); harvest with dashboards >= 80% of the throughput of the same harvest
without them, same run (issue 12; the one-off logit effects per layer are reported apart and in the
total).  SAEs: the shipped default suite when installed, else random TopK SAEs of the same width.
Also prints peak RSS.

With ``--atlas``: a dashboard harvest of every shipped layer (17 x 2,048 features), the atlas of it
(PCA layout), its size on disk and the first paint in headless chromium (targets <= 30 MB, <= 3 s),
and the time to open a feature's dashboard panel.

    python benchmarks/bench_harvest.py [--blocks 64] [--layers 3,9,15]
    python benchmarks/bench_harvest.py --small      # 16 blocks, 2 layers: a quick check that it runs
    python benchmarks/bench_harvest.py --atlas --atlas-blocks 128
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=64)
    ap.add_argument("--layers", default="3,9,15")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--small", action="store_true", help="16 blocks, layers 3,9, batch 8 (seconds)")
    ap.add_argument("--atlas", action="store_true", help="also: atlas of all layers with dashboards, size and paint")
    ap.add_argument("--atlas-blocks", type=int, default=128)
    args = ap.parse_args()
    if args.small:
        args.blocks, args.layers, args.batch = 16, "3,9", 8
    import torch

    from featuregeo.io.corpus import blocks, builtin_corpus
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.models import iter_residual_stream, load_model, set_threads

    set_threads(2)
    layers = [int(x) for x in args.layers.split(",")]
    model = load_model("default")
    _, held = builtin_corpus().split(0.1, seed=0)
    docs = list(held.by_genre("code"))[:40] + list(held.by_genre("prose"))[:60]
    rows = [b for b in blocks(docs, model.tokenizer, 256, add_bos=True, max_blocks=args.blocks, max_blocks_per_doc=2)]
    try:
        from featuregeo.io import open_suite
        from featuregeo.io.saelens import load_sae

        suite = open_suite("default", layers)
        saes = {L: load_sae(suite.load(L)) for L in layers}
        what = "shipped default SAEs"
    except Exception:
        from sae_lens import TopKSAE, TopKSAEConfig

        torch.manual_seed(0)
        saes = {L: TopKSAE(TopKSAEConfig(d_in=model.d_model, d_sae=2048, k=32)) for L in layers}
        what = "random TopK SAEs (width 2048)"
    ids = [b.input_ids for b in rows]
    n_tok = len(ids) * 256
    # warm-up
    for _ in iter_residual_stream(model, ids[: args.batch], layers, batch_size=args.batch, seq_len=None, add_bos=False):
        pass
    t0 = time.perf_counter()
    for _ in iter_residual_stream(model, ids, layers, batch_size=args.batch, seq_len=None, add_bos=False):
        pass
    t_fwd = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="fg-bench-harvest-"))
    logit_s: list[float] = []

    def note(line: str) -> None:
        m = re.search(r"logit effects of layer \d+ .* in ([\d.]+)s", line)
        if m:
            logit_s.append(float(m.group(1)))

    try:
        params = HarvestParams(block_len=256, batch_size=args.batch, shard_blocks=args.batch * 2,
                               max_blocks=args.blocks, max_blocks_per_doc=2)
        t0 = time.perf_counter()
        harvest(model, docs, tmp / "h", params.replace(dashboards=False), saes=saes)
        t_h = time.perf_counter() - t0
        t0 = time.perf_counter()
        harvest(model, docs, tmp / "d", params, saes=saes, progress=note)
        t_d = time.perf_counter() - t0
        shard_mb = sum(f.stat().st_size for f in (tmp / "d" / "shards").glob("*.npz")) / 1e6
        plain_mb = sum(f.stat().st_size for f in (tmp / "h" / "shards").glob("*.npz")) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ratio = t_fwd / t_h
    t_logit = sum(logit_s)
    dash_ratio = t_h / t_d
    stream_ratio = t_h / max(t_d - t_logit, 1e-9)
    print(f"harvest of {len(ids)} blocks x 256 tokens, layers {layers}, batch {args.batch}, {what}")
    print(f"  bare forward: {n_tok / t_fwd:.0f} tokens/s; harvest: {n_tok / t_h:.0f} tokens/s "
          f"-> ratio {ratio:.2f} [target >= 0.80]; peak RSS {rss / 1e9:.2f} GB")
    print(f"  harvest with dashboards: {n_tok / t_d:.0f} tokens/s in total, of which logit effects "
          f"{t_logit:.1f} s ({t_logit / max(1, len(layers)):.1f} s per layer, once per SAE); "
          f"ratio to without: {dash_ratio:.2f} in total, {stream_ratio:.2f} for the shards "
          f"[target >= 0.80]; shard files {shard_mb:.1f} MB vs {plain_mb:.1f} MB without")
    ok = ratio >= 0.8 and stream_ratio >= 0.8
    print("  PASS" if ok else "  FAIL")
    if args.atlas:
        atlas_bench(model, held, args.atlas_blocks, args.batch)
    return 0 if ok else 1


def atlas_bench(model, corpus, n_blocks: int, batch: int) -> None:
    """Harvest every shipped layer with dashboards, build the atlas, measure its size and first paint."""
    from featuregeo.atlas import AtlasParams
    from featuregeo.io import open_suite
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.saelens import load_sae
    from featuregeo.pipeline import atlas as atlas_pipeline

    suite = open_suite("default")
    tmp = Path(tempfile.mkdtemp(prefix="fg-bench-atlas-"))
    try:
        saes = {L: load_sae(suite.load(L)) for L in suite.layers}
        t0 = time.perf_counter()
        harvest(model, corpus.interleaved(), tmp / "h", HarvestParams(block_len=256, batch_size=batch,
                shard_blocks=batch * 4, max_blocks=n_blocks, max_blocks_per_doc=2), saes=saes)
        t_h = time.perf_counter() - t0
        del saes
        t0 = time.perf_counter()
        res = atlas_pipeline.run(suite, tmp / "atlas", params=AtlasParams(layout="pca"), harvest=tmp / "h",
                                 progress=None)
        t_a = time.perf_counter() - t0
        out = tmp / "atlas"
        total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        site = total - sum(f.stat().st_size for f in (out / ".checkpoint").rglob("*") if f.is_file())
        dash = sum(f.stat().st_size for f in (out / "data").glob("dash*.js"))
        page = paint(out / "index.html")
        print(f"atlas of {len(res.layers)} layers x {res.layers[0].n_features} features with dashboards "
              f"({n_blocks} blocks harvested in {t_h:.0f} s, atlas built in {t_a:.0f} s)")
        print(f"  size: {site / 1e6:.1f} MB [target <= 30 MB] (+ {(total - site) / 1e6:.1f} MB resumable checkpoint in "
              f".checkpoint/), of which dashboard data {dash / 1e6:.1f} MB")
        print(f"  chromium: first paint {page['loadMs'] / 1e3:.2f} s after navigation (wall {page['wall']:.2f} s) "
              f"[target <= 3 s]; a feature's dashboard panel opened in {page['panel_ms']:.0f} ms (first, loads the "
              f"dashboard files) and {page['panel2_ms']:.0f} ms (next)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def paint(index: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from _common import open_atlas

    with sync_playwright() as p:
        b, page, wall = open_atlas(p, index)
        res = {"wall": wall, "loadMs": page.evaluate("atlas.loadMs")}
        for key, fid in (("panel_ms", 7), ("panel2_ms", 8)):
            t1 = time.perf_counter()
            page.evaluate(f"atlas.selectId({fid}, true)")
            page.wait_for_selector("#contexts .ctx, #contexts .hint", timeout=120_000)
            res[key] = 1e3 * (time.perf_counter() - t1)
        b.close()
    return res


if __name__ == "__main__":
    raise SystemExit(main())
