"""Ship the tuned lens of a lens study with the default suite (featuregeo/data/default_suite/lenses/).

Reads ``RUN/tuned_lens`` (written by ``analyses/lens_study.py --out RUN``) and ``RUN/lens.json``,
writes the translators with int8 ``A`` matrices and a float32 scale per row (biases float32), and a ``manifest.json`` with the
model, corpus split, training tokens, steps, seed, the study's held-out numbers and SHA-256 checksums.

    PYTHONPATH=. python analyses/ship_lenses.py --run /work/runs-lens/full
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from featuregeo.core.util import atomic_write_json
    from featuregeo.pipeline.lens import LENS_DIR, pretrained_lens_dir
    from featuregeo.tl.lens import LensResult, TunedLens

    run = Path(a.run)
    out = Path(a.out) if a.out else pretrained_lens_dir()
    lens = TunedLens.load(run / LENS_DIR)
    res = LensResult.load(run)
    lens.save(out, weight_dtype="int8")  # 7 MB: the shipped weights stay within 100 MB
    p = res.params
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.iterdir())
             if f.name in ("config.json", "params.safetensors")}
    manifest = {
        "name": "featuregeo tuned lens for the default model",
        "model": "default (Gemma 3 270M, as loaded by featuregeo.io.models.load_model('default'))",
        "identity": lens.identity,
        "layers": lens.layers,
        "format": "config.json + params.safetensors (layer_<L>.weight = A int8, layer_<L>.weight_scale = per-row float32 scale, layer_<L>.bias = b float32, subset)",
        "corpus": f"featuregeo built-in corpus, training split (held_out={p.held_out}, seed={p.seed}); evaluation "
                  "on the held-out split",
        "train_tokens": res.n_train_tokens, "block_len": p.block_len, "steps": p.steps,
        "batch_tokens": p.batch_tokens, "lr": p.lr, "vocab_subset": p.vocab_subset, "vocab_sample": p.vocab_sample,
        "train_dtype": p.train_dtype, "seed": p.seed,
        "heldout": {"tokens": res.n_eval_tokens, "documents": res.n_eval_docs,
                    "kl": {rec.layer: {"logit": rec.logit.kl.mean, "tuned": rec.tuned.kl.mean} for rec in res.layers}},
        "build_command": f"python analyses/lens_study.py --out {run} && python analyses/ship_lenses.py --run {run}",
        "licence": "derived from Gemma 3 (Gemma Terms of Use)",
        "sha256": files,
    }
    atomic_write_json(out / "manifest.json", json.loads(json.dumps(manifest)))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out}: {len(lens.layers)} layers, {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
