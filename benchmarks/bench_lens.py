"""Benchmark: the tuned-lens training step and the lens evaluation on Gemma 3 270M, against references.

(a) One training step of one layer's translator (batch of B tokens): ours — a fixed 8,192-token
    vocabulary subset plus a sampled "rest" bucket (1,024 complement tokens per step), bf16 unembedding
    matmuls — against the straightforward reference step: full 262,144-token softmax in float32 for
    both the target and the lens.  Also our subset step in float32, to separate the two speed-ups.
    Extrapolated to the issue's target: 17 lenses x ``steps`` steps <= 30 min.
(b) Evaluation throughput (full vocabulary, four metrics, both lenses) in float32 and bf16,
    extrapolated to 8,192 held-out tokens x 17 layers x 2 lenses (+ the final distribution) <= 10 min.
(c) Peak RSS of the process (target <= 6 GB for the study).

    PYTHONPATH=. python benchmarks/bench_lens.py [--quick] [--steps 250]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import peak_rss_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="batch 128, fewer steps")
    ap.add_argument("--steps", type=int, default=250, help="steps per layer used for the extrapolation")
    a = ap.parse_args()
    import torch

    from featuregeo.io.lens_hooks import find_readout, hidden_states
    from featuregeo.io.models import load_model
    from featuregeo.tl.lens import LensParams, choose_subset, evaluate_lenses, lens_data, train_translator

    torch.set_num_threads(2)
    lm = load_model("default", threads=2)
    ro = find_readout(lm)
    B = 128 if a.quick else 512
    params = LensParams(block_len=64, train_tokens=1024, eval_tokens=128 if a.quick else 256)
    data = lens_data(lm.tokenizer, None, params)
    layers = [8, lm.n_layers - 1]
    tr = hidden_states(lm, data.train.rows, layers)[:, :, :64]
    ev = hidden_states(lm, data.heldout.rows, layers)[:, :, :64]
    h = torch.as_tensor(tr[0].reshape(-1, lm.d_model))
    hf = torch.as_tensor(tr[1].reshape(-1, lm.d_model))
    with torch.no_grad():
        sub = choose_subset(torch.cat([ro.logits(hf[j:j + 128]) for j in range(0, 512, 128)]), 8192)

    def step_time(n_steps, **kw):
        train_translator(h, hf, ro, steps=1, batch=B, lr=1e-3, seed=0, **kw)  # warm-up
        t0 = time.perf_counter()
        train_translator(h, hf, ro, steps=n_steps, batch=B, lr=1e-3, seed=0, **kw)
        return (time.perf_counter() - t0) / n_steps

    n = 3 if a.quick else 10
    ours = step_time(n, subset=sub, n_sample=1024, dtype="bfloat16")
    ours32 = step_time(n, subset=sub, n_sample=1024, dtype="float32")
    ref = step_time(2, subset=None, dtype="float32")
    print(f"(a) training step, batch {B} tokens, one layer:")
    print(f"    reference (full 262k softmax, float32):      {ref:8.3f} s/step")
    print(f"    subset 8192 + rest bucket, float32:          {ours32:8.3f} s/step  ratio {ours32 / ref:.3f}")
    print(f"    subset 8192 + rest bucket, bf16 matmuls:     {ours:8.3f} s/step  ratio {ours / ref:.3f} "
          f"({ref / ours:.1f}x faster)")
    scale = 512 / B
    total = 17 * a.steps * ours * scale
    print(f"    17 lenses x {a.steps} steps x 512 tokens (extrapolated): {total / 60:.1f} min (target <= 30 min); "
          f"reference would take {17 * a.steps * ref * scale / 60:.0f} min")

    targets = data.heldout.rows[:, 2:66]
    transl = {0: (torch.zeros(lm.d_model, lm.d_model), torch.zeros(lm.d_model))}
    n_tok = targets.size
    for dt in ("bfloat16", "float32"):
        t0 = time.perf_counter()
        evaluate_lenses(ev, 1, targets, ro, transl, dtype=dt)
        sec = time.perf_counter() - t0
        # per token: 1 final + 2 lenses (layer 8); the full evaluation has 1 final + 34 lens passes
        per_pass = sec / (n_tok * 3)
        full = per_pass * 8192 * 35
        print(f"(b) evaluation, {dt:>8}: {n_tok} tokens x 3 distributions in {sec:.1f} s -> 8,192 tokens x 35 "
              f"distributions = {full / 60:.1f} min (target <= 10 min)")
    print(f"(c) peak RSS {peak_rss_bytes() / 2**30:.2f} GB (target <= 6 GB; the study holds more states)")


if __name__ == "__main__":
    main()
