"""Running (or resuming) a harvest: check every input, then read the corpus shard by shard.

Stages: :func:`plan_harvest` checks the params, the model's layers, the SAEs and the output
directory and computes the fingerprint (nothing is written); :func:`first_blocks` proves the
corpus yields at least one block (still nothing written); then the directory is opened (manifest,
lock) and every unfinished shard goes through :func:`harvest_shard` and :func:`shard_arrays`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_json, fingerprint
from featuregeo.io.corpus import Block, Corpus, Document, blocks
from featuregeo.io.harvest.dashboards import write_logit_effects
from featuregeo.io.harvest.files import (FORMAT_VERSION, MANIFEST, check_out_dir, npy_bytes, npz_bytes,
                                         read_manifest, shard_name, write_file)
from featuregeo.io.harvest.params import HarvestError, HarvestParams
from featuregeo.io.harvest.reader import Harvest
from featuregeo.io.models import LoadedModel, batches, check_layers, iter_residual_stream
from featuregeo.io.taps import ResidualTap, tap_request


def sae_checksum(sae) -> str:
    """A hash of an SAE's weights (its ``state_dict``, as float32 bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class HarvestPlan:
    """Everything a harvest run needs, checked; made by :func:`plan_harvest` without writing anything."""

    out: Path
    params: HarvestParams
    layers: list[int]
    sae_layers: list[int]
    saes: dict[int, Any]
    corpus: Corpus
    fingerprint: str
    manifest: dict
    fresh: bool  # True: a new harvest.json is written; False: resume the one on disk


def as_corpus(corpus: Corpus | Iterable[Document]) -> Corpus:
    """A :class:`Corpus` from a Corpus or an iterable of Documents (InputError for anything else)."""
    if isinstance(corpus, Corpus):
        return corpus
    if isinstance(corpus, (str, bytes)) or not hasattr(corpus, "__iter__"):
        raise InputError(f"corpus: expected a Corpus or a list of Documents. Got {type(corpus).__name__} instead; "
                         "load files with featuregeo.io.corpus.load_corpus")
    return Corpus(corpus)


def check_saes(model: LoadedModel, saes: Mapping[int, Any] | None) -> dict[int, Any]:
    """The SAEs by layer, each checked to be a sae-lens SAE reading this model's residual stream."""
    if saes is None:
        return {}
    if not isinstance(saes, Mapping):
        raise InputError(f"saes: expected a mapping layer -> sae-lens SAE. Got {type(saes).__name__} instead.")
    out = {}
    for L, sae in saes.items():
        cfg = getattr(sae, "cfg", None)
        if not (hasattr(sae, "encode") and hasattr(sae, "state_dict") and hasattr(cfg, "d_in")
                and hasattr(cfg, "d_sae")):
            raise InputError(f"saes[{L}]: expected a sae-lens SAE (featuregeo.io.saelens.load_sae). "
                             f"Got {type(sae).__name__} instead.")
        if int(cfg.d_in) != model.d_model:
            raise InputError(f"saes[{L}]: the SAE reads d_model {int(cfg.d_in)} but {model.name} has d_model "
                             f"{model.d_model}; expected an SAE trained on this model")
        out[int(L)] = sae
    return out


def harvest_config(model: LoadedModel, corpus: Corpus, params: HarvestParams, layers: list[int],
                   saes: dict[int, Any]) -> dict:
    """The ``config`` block of ``harvest.json`` (flat, as read by :class:`Harvest`)."""
    p = params.to_dict()
    p.pop("layers")
    return {"layers": layers, "sae_layers": sorted(saes), **p, "drop_bos": True, "model": model.name,
            "model_dtype": model.dtype, "d_model": model.d_model,
            "saes": {str(L): {"d_sae": int(saes[L].cfg.d_sae), "checksum": sae_checksum(saes[L])} for L in sorted(saes)},
            "corpus": corpus.name, "corpus_documents": len(corpus), "corpus_fingerprint": corpus.fingerprint()}


def plan_harvest(model: LoadedModel, corpus: Corpus | Iterable[Document], out: str | Path, params: HarvestParams,
                 saes: Mapping[int, Any] | None = None) -> HarvestPlan:
    """Check every input of a harvest and compute its fingerprint; writes nothing.

    Raises a one-line InputError for bad params, a layer the model lacks, an SAE for another
    model, an ``out`` that is (under) a file, or an ``out`` holding a different harvest that has
    finished shards.
    """
    if not isinstance(params, HarvestParams):
        raise InputError(f"params: expected HarvestParams. Got {type(params).__name__} instead.")
    params.validate()
    if not isinstance(model, LoadedModel):
        raise InputError(f"model: expected a LoadedModel from featuregeo.io.models.load_model. "
                         f"Got {type(model).__name__} instead.")
    out = check_out_dir(out)
    saes = check_saes(model, saes)
    if not saes and not params.store_activations:
        raise InputError("saes: nothing to harvest; expected SAEs for some layers or store_activations=True")
    wanted = set(params.layers or ()) | set(saes)
    if not wanted:
        raise InputError("layers: expected at least one layer whose activations to store. Got none instead.")
    layers = check_layers(model, sorted(wanted))
    corpus = as_corpus(corpus)
    config = harvest_config(model, corpus, params, layers, saes)
    fp = fingerprint("featuregeo-harvest", FORMAT_VERSION, params.replace(layers=None).fingerprint(),
                     {k: v for k, v in config.items() if k not in ("corpus", "corpus_documents")})
    manifest = {"format": FORMAT_VERSION, "fingerprint": fp, "config": config, "params": params.to_dict(),
                "d_model": model.d_model, "activation_scale": {}, "complete": False}
    fresh = True
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        if old["fingerprint"] == fp:
            manifest, fresh = old, False
        elif any((out / "shards").glob("shard_*.npz")):
            raise InputError(f"--out {out}: holds a different harvest (fingerprint {old['fingerprint']} vs {fp}) with "
                             "finished shards; expected an empty directory, or the same model, SAEs, corpus and "
                             "options to resume")
    return HarvestPlan(out=out, params=params, layers=layers, sae_layers=sorted(saes), saes=saes, corpus=corpus,
                       fingerprint=fp, manifest=manifest, fresh=fresh)


def first_blocks(plan: HarvestPlan, tokenizer) -> Iterator[Block]:
    """The corpus's blocks, after checking that there is at least one (InputError otherwise)."""
    p = plan.params
    it = blocks(plan.corpus, tokenizer, p.block_len, add_bos=True, max_blocks=p.max_blocks,
                max_blocks_per_doc=p.max_blocks_per_doc)
    first = next(it)  # raises the corpus's InputError when no document holds a complete block
    return itertools.chain([first], it)


def open_harvest_dir(plan: HarvestPlan) -> None:
    """Create the directory and (for a fresh harvest) its manifest; drop leftovers of an abandoned start."""
    plan.out.mkdir(parents=True, exist_ok=True)
    if plan.fresh:
        shutil.rmtree(plan.out / "acts", ignore_errors=True)  # activation files of a shard that never finished
        shutil.rmtree(plan.out / "dashboards", ignore_errors=True)  # logit effects of an abandoned start
        atomic_write_json(plan.out / MANIFEST, plan.manifest)
    (plan.out / "shards").mkdir(exist_ok=True)


def activation_scale(plan: HarvestPlan, layer: int, acts) -> float:
    """The layer's activation scale: fixed from the harvest's first batch, then read from the manifest."""
    scales = plan.manifest["activation_scale"]
    if str(layer) not in scales:
        norms = acts.norm(dim=-1)
        scales[str(layer)] = float(math.sqrt(plan.manifest["d_model"]) / norms.mean().item())
        atomic_write_json(plan.out / MANIFEST, plan.manifest)
    return float(scales[str(layer)])


def harvest_shard(model: LoadedModel, plan: HarvestPlan, shard: list[Block], dashboards: dict | None = None, *,
                  taps: Sequence[ResidualTap] = (), first_row: int = 0
                  ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], int]:
    """One shard through the model: per SAE layer a bool [blocks, d_sae] firing matrix, per layer the
    scaled float16 activations (when stored), and the number of tokens read.  ``taps`` keep residuals
    of their rows (``first_row``: the index of the shard's first block) from the same forward pass.

    When ``dashboards`` is a dict it is filled with one
    :class:`~featuregeo.io.harvest.dashcollect.ShardDashboards` per SAE layer, collected from the
    same forward pass (``plan.params.dashboards`` must be on)."""
    import torch

    from featuregeo.io.harvest.dashcollect import ShardDashboards

    p = plan.params
    fired: dict[int, list[np.ndarray]] = {L: [] for L in plan.sae_layers}
    acts_out: dict[int, list[np.ndarray]] = {L: [] for L in plan.layers} if p.store_activations else {}
    if dashboards is not None:
        dashboards.update({L: ShardDashboards(int(plan.saes[L].cfg.d_sae), p.dashboard_k, p.dashboard_window)
                           for L in plan.sae_layers})
    n_tokens = 0
    tap_layers, tap_embeddings = tap_request(taps, first_row, len(shard))
    for rb in iter_residual_stream(model, [b.input_ids for b in shard], sorted(set(plan.layers) | tap_layers),
                                   batch_size=p.batch_size, seq_len=None, add_bos=False, drop_bos=True,
                                   out_dtype="float32", embeddings=tap_embeddings):
        for tap in taps:
            tap.take(rb, first_row)
        mask = rb.mask
        for L in plan.layers:
            a = rb.acts[L]  # [B, T, d] float32
            if p.store_activations:
                x = (a[mask] * activation_scale(plan, L, a[mask])).numpy()
                if not np.isfinite(x.astype(np.float16)).all():
                    raise HarvestError(f"layer {L}: scaled activations overflow float16 "
                                       f"(max |x| {np.abs(x).max():.3g}); expected values below 65504")
                acts_out[L].append(x.astype(np.float16))
            if L in plan.saes:
                sae = plan.saes[L]
                with torch.inference_mode():
                    f = sae.encode(a.to(sae.W_dec.dtype))
                    f = f.masked_fill(~mask[..., None], 0)
                    fired[L].append((f > p.threshold).any(dim=1).numpy())
                    if dashboards is not None:  # the block's text tokens: the last block_len positions
                        dashboards[L].add(f[:, -p.block_len:].float(), mask[:, -p.block_len:])
        n_tokens += int(mask.sum())
    return ({L: np.concatenate(v) for L, v in fired.items()}, {L: np.concatenate(v) for L, v in acts_out.items()},
            n_tokens)


def shard_arrays(shard: list[Block], fired: dict[int, np.ndarray], dashboards: dict | None = None,
                 tokenizer=None) -> dict[str, np.ndarray]:
    """The arrays of a shard file: block metadata and, per SAE layer, the firing matrix as CSR parts
    (plus, with ``dashboards`` from :func:`harvest_shard`, the block tokens, their strings decoded
    with ``tokenizer`` and each layer's ``dash_L_*`` arrays)."""
    arrays = {
        "doc_id": np.array([b.doc_id for b in shard]),
        "genre": np.array([b.genre for b in shard]),
        "source": np.array([b.source for b in shard]),
        "start": np.array([b.start for b in shard], dtype=np.int64),
    }
    for L, fb in fired.items():
        rows, cols = np.nonzero(fb)
        arrays[f"fire_{L}_indptr"] = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=fb.shape[0])))
                                                    ).astype(np.int64)
        arrays[f"fire_{L}_indices"] = cols.astype(np.int32)
        arrays[f"fire_{L}_shape"] = np.array(fb.shape, dtype=np.int64)
    if dashboards:
        from featuregeo.io.harvest.dashcollect import token_strings

        T = len(shard[0].input_ids) - 1  # BOS dropped: the text tokens, as harvest_shard reads them
        tokens = np.array([np.asarray(b.input_ids)[-T:] for b in shard], dtype=np.int32)
        arrays["tokens"] = tokens
        arrays.update(token_strings(tokenizer, tokens.ravel()))
        for L, dash in dashboards.items():
            arrays.update(dash.arrays(f"dash_{L}_"))
    return arrays


def shard_files(model: LoadedModel, plan: HarvestPlan, shard: list[Block], *, taps: Sequence[ResidualTap] = (),
                first_row: int = 0) -> tuple[bytes, dict[int, np.ndarray], int]:
    """Everything one shard writes, computed from one forward pass: the shard file's bytes (firing,
    and dashboards when ``plan.params.dashboards``), the activations per layer (when stored), and
    the number of tokens read.  Depends only on the shard's blocks and the plan, so a shard computed
    anywhere (another process, another machine) gives the same bytes."""
    dash: dict | None = {} if plan.params.dashboards and plan.saes else None
    fired, acts, n_tok = harvest_shard(model, plan, shard, dash, taps=taps, first_row=first_row)
    return npz_bytes(shard_arrays(shard, fired, dash, model.tokenizer)), acts, n_tok


def write_shard(model: LoadedModel, plan: HarvestPlan, shard: list[Block], index: int,
                taps: Sequence[ResidualTap] = ()) -> int:
    """Harvest shard ``index`` and write its files (activations first, the shard file last: it marks the
    shard done); returns the number of tokens read.  The serial loop and the cluster's tasks both call it;
    ``taps`` keep residuals of some blocks from the same forward pass (serial only)."""
    data, acts, n_tok = shard_files(model, plan, shard, taps=taps, first_row=index * plan.params.shard_blocks)
    for L, x in acts.items():
        write_file(plan.out / "acts" / f"layer_{L}" / f"shard_{index:06d}.npy", npy_bytes(x))
    write_file(plan.out / "shards" / shard_name(index), data)
    return n_tok


def harvest(model: LoadedModel, corpus: Corpus | Iterable[Document], out: str | Path,
            params: HarvestParams | None = None, *, saes: Mapping[int, Any] | None = None,
            progress: Callable[[str], Any] | None = None, stop_after_shards: int | None = None,
            taps: Sequence[ResidualTap] = ()) -> Harvest:
    """Run (or resume) a harvest into ``out`` and return a :class:`Harvest` reader.

    For every complete block of ``params.block_len`` tokens and every layer with an SAE, the
    features whose activation exceeds ``params.threshold`` on any token of the block are stored
    (sparse), with the block's document id, source and genre.  Several layers come from one
    forward pass.  Every input is checked before anything is written or computed.

    Parameters
    ----------
    model : LoadedModel
        From :func:`featuregeo.io.models.load_model`.
    corpus : Corpus or iterable of Document
        Read in order (use :meth:`Corpus.interleaved` for genre-balanced prefixes).
    out : path
        The harvest directory (created).  A directory holding the same harvest resumes it; one
        holding a different harvest with finished shards is refused.
    params : HarvestParams, optional
        Default ``HarvestParams()``.
    saes : mapping layer -> sae-lens SAE, optional
        Encoders whose firing is recorded; ``d_in`` must equal the model's ``d_model``.
    progress : callable, optional
        Called with one line of text per finished shard.
    stop_after_shards : int, optional
        Stop after writing this many new shards (for tests of resumption).
    taps : sequence of ResidualTap, optional
        Keep the residual stream of some blocks (by index in the harvest's block order) from the
        harvest's own forward pass (:mod:`featuregeo.io.taps`); they change nothing the harvest
        writes.  Blocks of shards finished earlier are not read again (``tap.fill`` reads them).

    Returns
    -------
    Harvest

    Examples
    --------
    >>> h = harvest(load_model(), load_corpus("builtin"), "out/h", HarvestParams(max_blocks=256),
    ...             saes={12: sae})                                          # doctest: +SKIP
    >>> h.firing(12).shape                                                   # doctest: +SKIP
    (256, 16384)
    """
    plan = plan_harvest(model, corpus, out, params or HarvestParams(), saes)
    block_iter = first_blocks(plan, model.tokenizer)
    say = progress or (lambda line: None)
    with Checkpoint(plan.out / ".checkpoint"):  # the lock: one process writes a harvest directory
        open_harvest_dir(plan)
        write_logit_effects(model, plan, say)  # once per layer, before the shards (resumable)
        t0, tokens, new_shards, n_blocks, index = time.perf_counter(), 0, 0, 0, 0
        for shard in batches(block_iter, plan.params.shard_blocks):
            path = plan.out / "shards" / shard_name(index)
            n_blocks += len(shard)
            if not path.exists():  # finished earlier: skip without running the model
                tokens += write_shard(model, plan, shard, index, taps=taps)
                new_shards += 1
                say(f"harvest: shard {index} done, {n_blocks} blocks, "
                    f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f} tokens/s")
                if stop_after_shards is not None and new_shards >= stop_after_shards:
                    return Harvest(plan.out)
            index += 1
        plan.manifest.update(complete=True, n_blocks=n_blocks, n_shards=index)
        atomic_write_json(plan.out / MANIFEST, plan.manifest)
    if index > new_shards:
        say(f"harvest: {index - new_shards} of {index} shards were already finished (resumed)")
    return Harvest(plan.out)
