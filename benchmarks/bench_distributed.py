"""Benchmark: harvest throughput on a Dask LocalCluster of 1 and 2 workers against the serial path, one run.

The same blocks (held-out built-in corpus, 256 tokens) and the shipped default SAEs go through
:func:`featuregeo.io.harvest.harvest` in this process (torch on every core) and through
:func:`featuregeo.io.harvest.distributed.harvest_distributed` on a LocalCluster of N worker
processes (one thread each).  Each cluster is warmed first (workers load the model and the SAEs on
a tiny harvest; that start-up is reported separately), then timed; every output must be byte-identical
to the serial one.  Peak RSS is reported per process and summed (client + workers + nannies).
The FLOPs per token (matmul parameters of the layers run, x2, plus the SAE encoders) turn the
1-worker rate into the effective GFLOP/s per worker used by the README's capacity table.

    flock /work/heavy.lock python benchmarks/bench_distributed.py [--blocks 128] [--layers 3,9,15]
    python benchmarks/bench_distributed.py --small      # 16 blocks, 1 layer, block 64: a quick check
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def flops_per_token(model, layers: list[int], saes: dict) -> float:
    """2 x (matrix parameters of the decoder layers up to the last harvested one) + 2 d d_sae per SAE.

    Attention's T^2 terms and the norms are left out (small at 256 tokens)."""
    from featuregeo.io.models import decoder_layers

    blocks = decoder_layers(model.model)[: max(layers) + 1]
    params = sum(p.numel() for b in blocks for p in b.parameters() if p.dim() == 2)
    return 2.0 * params + sum(2.0 * int(s.cfg.d_in) * int(s.cfg.d_sae) for s in saes.values())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=128)
    ap.add_argument("--layers", default="3,9,15")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block-len", type=int, default=256)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--small", action="store_true", help="16 blocks of 64 tokens, layer 9")
    args = ap.parse_args()
    if args.small:
        args.blocks, args.layers, args.block_len = 16, "9", 64

    from featuregeo.io import open_suite
    from featuregeo.io.cluster import connect
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.harvest.distributed import harvest_distributed
    from featuregeo.io.models import load_model
    from featuregeo.io.saelens import load_sae

    layers = [int(x) for x in args.layers.split(",")]
    model = load_model("default")  # torch on every core of this process
    import torch

    suite = open_suite("default", layers)
    saes = {L: load_sae(suite.load(L)) for L in layers}
    _, held = builtin_corpus().split(0.1, seed=0)
    docs = held.interleaved()
    params = HarvestParams(block_len=args.block_len, batch_size=args.batch, shard_blocks=args.batch * 2,
                           max_blocks=args.blocks, max_blocks_per_doc=2)
    warm = params.replace(max_blocks=args.batch * 2)  # one shard per worker, to load the model there
    n_tok = args.blocks * args.block_len
    fpt = flops_per_token(model, layers, saes)
    tmp = Path(tempfile.mkdtemp(prefix="fg-bench-dist-"))
    rows = []
    try:
        harvest(model, docs, tmp / "warm-serial", warm, saes=saes)
        t0 = time.perf_counter()
        harvest(model, docs, tmp / "serial", params, saes=saes)
        t_serial = time.perf_counter() - t0
        ref = tree(tmp / "serial")
        rows.append(("serial (this process)", torch.get_num_threads(), t_serial, None, True, maxrss(), [maxrss()]))
        for n in [int(x) for x in args.workers.split(",")]:
            t0 = time.perf_counter()
            with connect(workers=n) as client:
                harvest_distributed(client, model, docs, tmp / f"warm-{n}", warm, saes=saes, source="default")
                t_start = time.perf_counter() - t0
                t0 = time.perf_counter()
                harvest_distributed(client, model, docs, tmp / f"d{n}", params, saes=saes, source="default")
                t_run = time.perf_counter() - t0
                workers = list(client.run(maxrss).values())
                nannies = list(client.run(maxrss, nanny=True).values())
            same = tree(tmp / f"d{n}") == ref
            rows.append((f"LocalCluster, {n} worker(s)", n, t_run, t_start, same, maxrss() + sum(workers) + sum(nannies),
                         [maxrss()] + workers + nannies))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"harvest of {args.blocks} blocks x {args.block_len} tokens ({n_tok} tokens), layers {layers}, batch "
          f"{args.batch}, shipped default SAEs (width {saes[layers[0]].cfg.d_sae}); {os.cpu_count()} CPUs, load "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"  {fpt / 1e6:.0f} MFLOP per token (2 x matmul params of layers 0-{max(layers)} + SAE encoders)")
    base = rows[0][2]
    for name, threads, t, t_start, same, rss_sum, rss in rows:
        start = "" if t_start is None else f", start-up (cluster + model load) {t_start:.1f} s"
        print(f"  {name:<26} {n_tok / t:8.0f} tokens/s  ({t:6.1f} s, x{base / t:.2f} vs serial{start}); "
              f"identical to serial: {same}; peak RSS sum {rss_sum / 1e9:.2f} GB "
              f"[{', '.join(f'{r / 1e9:.2f}' for r in rss)}]")
    one = [r for r in rows if r[1] == 1 and r[3] is not None]
    if one:
        rate = n_tok / one[0][2]
        print(f"  per worker (1 process, 1 thread): {rate:.0f} tokens/s = {rate * fpt / 1e9:.1f} effective GFLOP/s")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
