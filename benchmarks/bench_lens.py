"""Benchmark: tuned-lens training and lens evaluation on Gemma 3 270M, against straightforward references.

(a) One training step for all 17 translators (batch of B tokens): ours — every layer on the same
    batch, a fixed 8,192-token vocabulary subset plus a "rest" bucket estimated from 1,024 sampled
    complement tokens, bf16 unembedding matmuls — against the straightforward reference step: the
    full 262,144-token log-softmax in float32 for the target and each lens, one layer at a time
    (timed on one layer, times 17).  Extrapolated to the study: hidden states of 32,768 training
    tokens + 256 steps x 512 tokens (target: <= 30 min).
(b) Evaluation of both lenses at all 18 layers (full vocabulary, four metrics): ours — one bf16
    matmul per vocabulary block for every lens at once, log-partition / entropy / argmax / cross
    term accumulated online, the final distribution in float32 — against the straightforward
    reference (a float32 log-softmax per lens and token chunk), on the same tokens.  Also the
    largest difference of a per-layer mean metric between our bf16 and our float32 evaluation.
    Extrapolated to 8,192 held-out tokens (target: <= 10 min).
(c) Peak RSS of the process (target <= 6 GB for the study).

    PYTHONPATH=. python benchmarks/bench_lens.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import peak_rss_bytes


def reference_step(h, hf, ro, A, b):
    """The straightforward step: full-vocabulary float32 log-softmax of target and lens, KL, backward."""
    import torch

    A = A.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    with torch.no_grad():
        lp = torch.log_softmax(ro.logits(hf), -1)
    lq = torch.log_softmax(ro.logits(h + h @ A.T + b), -1)
    loss = (lp.exp() * (lp - lq)).sum(-1).mean()
    loss.backward()
    return float(loss)


def reference_eval(states, final_index, targets, ro, chunk=32):
    """The straightforward evaluation: per token chunk, a float32 log-softmax per lens (logit lens only)."""
    import torch

    nL, R, T, d = states.shape
    flat = states.reshape(nL, R * T, d)
    tgt = torch.as_tensor(targets.reshape(-1))
    out = np.zeros((nL, R * T, 4))
    with torch.no_grad():
        for j in range(0, R * T, chunk):
            sl = slice(j, min(R * T, j + chunk))
            lp = torch.log_softmax(ro.logits(torch.as_tensor(flat[final_index, sl])), -1)
            p = lp.exp()
            for i in range(nL):
                lq = torch.log_softmax(ro.logits(torch.as_tensor(flat[i, sl])), -1)
                out[i, sl, 0] = (-lq.gather(1, tgt[sl, None])[:, 0]).numpy()
                out[i, sl, 1] = (p * (lp - lq)).sum(-1).numpy()
                out[i, sl, 2] = (-(lq.exp() * lq).sum(-1)).numpy()
                out[i, sl, 3] = (lq.argmax(-1) == lp.argmax(-1)).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="batch 128, fewer tokens")
    a = ap.parse_args()
    import torch

    from featuregeo.io.lens_hooks import find_readout, hidden_states
    from featuregeo.io.models import load_model
    from featuregeo.tl.lens import LensParams, choose_subset, evaluate_lenses, lens_data, train_lenses

    torch.set_num_threads(2)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are pessimistic when busy)")
    lm = load_model("default", threads=2)
    ro = find_readout(lm)
    last = lm.n_layers - 1
    B = 128 if a.quick else 512
    T = 64
    params = LensParams(block_len=T, train_tokens=B * 2, eval_tokens=64 if a.quick else 256)
    data = lens_data(lm.tokenizer, None, params)
    layers = list(range(lm.n_layers))
    t0 = time.perf_counter()
    tr = hidden_states(lm, data.train.rows, layers)[:, :, :T]
    fwd = (time.perf_counter() - t0) / data.train.rows.size
    ev = hidden_states(lm, data.heldout.rows, layers)[:, :, :T]
    states = {L: torch.as_tensor(tr[L].reshape(-1, lm.d_model)) for L in layers}
    states["final"] = states[last]
    with torch.no_grad():
        mass = sum(torch.softmax(ro.logits(states[last][j:j + 64]), -1).sum(0) for j in range(0, B, 64))
    sub = choose_subset(torch.log(mass)[None], 8192)

    # (a) one joint step (17 layers) vs the reference step (one layer, x 17)
    n = 2 if a.quick else 4
    kw = dict(subset=sub, n_sample=1024, batch=B, lr=2e-3, seed=0)
    train_lenses(lambda c: states, 1, layers[:-1], ro, steps=1, **kw)  # warm-up
    t0 = time.perf_counter()
    train_lenses(lambda c: states, 1, layers[:-1], ro, steps=n, **kw)
    ours = (time.perf_counter() - t0) / n
    z = torch.zeros(lm.d_model, lm.d_model), torch.zeros(lm.d_model)
    h8, hf = states[8][:B], states[last][:B]
    reference_step(h8, hf, ro, *z)
    t0 = time.perf_counter()
    reference_step(h8, hf, ro, *z)
    ref = (time.perf_counter() - t0) * (lm.n_layers - 1)
    print(f"(a) training step, batch {B} tokens, all {lm.n_layers - 1} translators:")
    print(f"    reference (full 262k log-softmax, float32, layer by layer): {ref:8.2f} s/step")
    print(f"    ours (joint, subset 8192 + 1024 sampled, bf16):             {ours:8.2f} s/step  ratio "
          f"{ours / ref:.3f} ({ref / ours:.0f}x faster)")
    scale = 512 / B
    total = 32768 * fwd + 256 * ours * scale
    print(f"    study (32,768 training tokens: forward {fwd * 1e3:.2f} ms/token; 256 steps x 512 tokens): "
          f"{total / 60:.1f} min (target <= 30 min); the reference steps alone would take "
          f"{256 * ref * scale / 60:.0f} min")

    # (b) evaluation: ours (bf16 and float32) vs the straightforward reference, same tokens
    targets = data.heldout.rows[:, 2:2 + T]
    rng = np.random.default_rng(0)
    transl = {i: (torch.as_tensor(rng.normal(0, 1e-3, (lm.d_model, lm.d_model)).astype(np.float32)),
                  torch.zeros(lm.d_model)) for i in range(last)}
    n_tok = targets.size
    res = {}
    for dt in ("bfloat16", "float32"):
        t0 = time.perf_counter()
        res[dt] = evaluate_lenses(ev, last, targets, ro, transl, dtype=dt)
        sec = time.perf_counter() - t0
        print(f"(b) evaluation ({dt:>8} lens matmuls): {n_tok} tokens x 18 layers x 2 lenses in {sec:.1f} s -> "
              f"8,192 tokens: {sec * 8192 / n_tok / 60:.1f} min (target <= 10 min)")
        if dt == "bfloat16":
            ours_eval = sec
    k = min(n_tok // T, max(1, 64 // T))
    t0 = time.perf_counter()
    ref_m = reference_eval(ev[:, :k], last, targets[:k], ro)
    ref_sec = (time.perf_counter() - t0) * 2 * n_tok / (k * T)  # two lenses, all tokens
    print(f"    reference (float32 log-softmax per lens): {ref_sec:.1f} s for the same work -> ratio "
          f"{ours_eval / ref_sec:.3f}")
    ours32 = res["float32"]["logit"][:, :k].reshape(lm.n_layers, -1, 4)
    print(f"    float32 ours vs reference, logit lens: max |difference| per token {np.abs(ours32 - ref_m).max(axis=(0, 1))}"
          f" (ce, kl, entropy, top1)")
    for name in ("logit", "tuned"):
        m16 = res["bfloat16"][name].reshape(lm.n_layers, -1, 4).mean(1)
        m32 = res["float32"][name].reshape(lm.n_layers, -1, 4).mean(1)
        print(f"    bf16 vs float32, {name} lens: largest difference of a per-layer mean: "
              f"CE {np.abs(m16 - m32)[:, 0].max():.4f}, KL {np.abs(m16 - m32)[:, 1].max():.4f}, entropy "
              f"{np.abs(m16 - m32)[:, 2].max():.4f} nats, top-1 {np.abs(m16 - m32)[:, 3].max():.4f}")
    print(f"(c) peak RSS {peak_rss_bytes() / 2**30:.2f} GB (target <= 6 GB)")


if __name__ == "__main__":
    main()
