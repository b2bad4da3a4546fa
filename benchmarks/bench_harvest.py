"""Benchmark: harvest throughput vs the bare forward pass of the same model and batches.

Target (issue 3): harvest tokens/s >= 80% of the bare base-model forward pass reading the same
layers, at batch 16 x 256.  SAEs: the shipped default suite when installed, else random TopK SAEs
of the same width.  Also prints peak RSS.

    python benchmarks/bench_harvest.py [--blocks 64] [--layers 3,9,15]
    python benchmarks/bench_harvest.py --small      # 16 blocks, 2 layers: a quick check that it runs
"""

from __future__ import annotations

import argparse
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
    try:
        t0 = time.perf_counter()
        params = HarvestParams(block_len=256, batch_size=args.batch, shard_blocks=args.batch * 2,
                               max_blocks=args.blocks, max_blocks_per_doc=2)
        harvest(model, docs, tmp / "h", params, saes=saes)
        t_h = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ratio = t_fwd / t_h
    print(f"harvest of {len(ids)} blocks x 256 tokens, layers {layers}, batch {args.batch}, {what}")
    print(f"  bare forward: {n_tok / t_fwd:.0f} tokens/s; harvest: {n_tok / t_h:.0f} tokens/s "
          f"-> ratio {ratio:.2f} [target >= 0.80]; peak RSS {rss / 1e9:.2f} GB")
    print("  PASS" if ratio >= 0.8 else "  FAIL")
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
