"""Lens study on Gemma 3 270M: logit lens vs tuned lens per layer, probes, causal check.

Runs :func:`featuregeo.pipeline.lens.run` on the default model and the built-in corpus (resumable
through ``OUT/.checkpoint``) and prints the per-layer table with 95 % document-bootstrap intervals,
the verdict of the issue's target (tuned lens below the logit lens in KL and cross-entropy at every
layer 0..16, intervals not overlapping), the probes, timings and peak RSS.

    PYTHONPATH=. flock /work/heavy.lock python analyses/lens_study.py --out runs/lens [--reduced]

``--reduced`` (what fits a shared 2-core machine in ~8 min): rows of 32 tokens, 4,096 training
tokens, 50 steps x 256 tokens per layer, 512 held-out tokens (16 documents x 32), 1,024 probe training
tokens, one causal layer (6).  Without it: the LensParams defaults (32,768 training tokens, 250 x 512,
8,192 held-out tokens), bf16 evaluation matmuls.
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/lens")
    ap.add_argument("--reduced", action="store_true")
    a = ap.parse_args()
    import torch

    from featuregeo.pipeline import lens as pipeline
    from featuregeo.tl.lens import LensParams

    torch.set_num_threads(2)
    if a.reduced:
        params = LensParams(block_len=32, train_tokens=4096, steps=50, batch_tokens=256, eval_tokens=512,
                            n_boot=1000, probe_tokens=1024, causal_layers=(6,), causal_rows=2, causal_random=2)
    else:
        params = LensParams()
    t0 = time.perf_counter()
    r = pipeline.run("default", a.out, params)
    wall = time.perf_counter() - t0
    print(f"\nmodel {r.model}: {r.n_layers} layers, softcap {r.softcap}, training subset {r.subset_size} tokens "
          f"(held-out final mass inside it {r.subset_mass:.3f}), {r.n_train_tokens} training tokens, "
          f"{r.n_eval_tokens} held-out tokens from {r.n_eval_docs} documents")
    print(f"{'layer':>5} | {'KL logit [95% CI]':>26} | {'KL tuned [95% CI]':>24} | {'CE logit':>22} | "
          f"{'CE tuned':>20} | {'H logit':>7} {'H tuned':>7} | {'top1 l':>6} {'top1 t':>6} | ok")
    ok_all = True
    for rec in r.layers:
        lo, tu = rec.logit, rec.tuned
        ok = (tu.kl.high < lo.kl.low) and (tu.ce.high < lo.ce.low)
        if rec.layer < r.n_layers - 1:
            ok_all &= ok
        f = lambda iv: f"{iv.mean:7.3f} [{iv.low:6.3f},{iv.high:6.3f}]"  # noqa: E731
        print(f"{rec.layer:>5} | {f(lo.kl):>26} | {f(tu.kl):>24} | {f(lo.ce):>22} | {f(tu.ce):>20} | "
              f"{lo.entropy.mean:7.3f} {tu.entropy.mean:7.3f} | {lo.top1.mean:6.3f} {tu.top1.mean:6.3f} | "
              f"{'yes' if ok else ('-' if rec.layer == r.n_layers - 1 else 'NO')}")
    print(f"verdict: tuned lens below logit lens in KL and CE with non-overlapping intervals at every layer "
          f"0..{r.n_layers - 2}: {'YES' if ok_all else 'NO'}")
    print("\nprobes (held-out accuracy; control = random label per token type; selectivity = acc - control):")
    for p in r.probe_rows():
        extra = (f" | ablate probe dirs: +{p['ablate_delta']:.4f} nats vs random +{p['random_delta']:.4f}"
                 if "ablate_delta" in p else "")
        print(f"  layer {p['layer']:>2} {p['task']:>6}: acc {p['accuracy']:.3f} control {p['control']:.3f} "
              f"sel {p['selectivity']:+.3f} chance {p['chance']:.3f}{extra}")
    print(f"baseline held-out loss (causal rows): {r.baseline_loss:.4f} nats/token")
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r.timings.items()) + f"; wall {wall:.0f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
