"""Harvest: model + SAEs + corpus -> which features fire in each block of text (and, optionally,
the residual activations themselves).

For every complete block of ``block_len`` tokens (default 256, as the paper) and every layer with
an SAE, the set of features whose activation exceeds ``threshold`` (default 1.0; the paper's rule)
on any token of the block is stored sparse (blocks x features), with the block's document id,
source and genre.  Several layers come from one forward pass.  With ``store_activations`` the
residual stream of every requested layer is also written (float16, scaled by a per-layer constant
recorded in the manifest), for SAE training and raw-activation spectra.

The output directory is resumable: blocks are cut into shards of ``shard_blocks`` blocks (a whole
number of batches), each written with an atomic rename, and a rerun skips finished shards — so an
interrupted harvest ends byte-identical to an uninterrupted one.

Layout::

    DIR/harvest.json                 configuration, fingerprint, per-layer activation scales
    DIR/shards/shard_000000.npz      block metadata + firing CSR per layer (written last = done)
    DIR/acts/layer_L/shard_000000.npy  float16 [shard_blocks * block_len, d_model] (optional)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from featuregeo.core.util import atomic_write_bytes, atomic_write_json
from featuregeo.core.errors import FeaturegeoError, InputError

FORMAT_VERSION = 1


class HarvestError(FeaturegeoError):
    """A harvest could not continue (e.g. the disk is full); finished shards are intact."""


# ----------------------------------------------------------------------------------------------
# deterministic files
# ----------------------------------------------------------------------------------------------
def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed .npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, npy_bytes(arrays[name]))
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HarvestError(f"{path.parent}: disk full while writing {path.name}; finished shards are intact — "
                               "free space and rerun the same command to resume") from None
        raise


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass
class HarvestConfig:
    """What a harvest does (stored in ``harvest.json``; a resume must match it)."""

    layers: list[int]
    sae_layers: list[int] = field(default_factory=list)
    block_len: int = 256
    threshold: float = 1.0
    batch_size: int = 16
    shard_blocks: int = 64
    max_blocks: int | None = None
    max_blocks_per_doc: int | None = None
    store_activations: bool = False
    drop_bos: bool = True
    model: str = ""
    saes: dict = field(default_factory=dict)  # layer -> source description
    corpus: str = ""

    def validate(self) -> None:
        if self.block_len < 1:
            raise InputError(f"block_len: expected a positive integer. Got {self.block_len} instead.")
        if self.batch_size < 1 or self.shard_blocks < 1:
            raise InputError(f"batch_size/shard_blocks: expected positive integers. Got {self.batch_size}, "
                             f"{self.shard_blocks} instead.")
        if self.shard_blocks % self.batch_size:
            raise InputError(f"shard_blocks: expected a multiple of batch_size ({self.batch_size}) so batches never "
                             f"straddle shards. Got {self.shard_blocks} instead.")
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise InputError(f"threshold: expected a finite number >= 0. Got {self.threshold} instead.")
        if not self.store_activations and not self.sae_layers:
            raise InputError("saes: nothing to harvest; expected SAEs for some layers or store_activations=True")

    def to_dict(self) -> dict:
        return asdict(self)


def _fingerprint(cfg: HarvestConfig, extra: Mapping[str, Any]) -> str:
    blob = json.dumps({"cfg": cfg.to_dict(), **extra, "v": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sae_checksum(sae) -> str:
    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# the harvest
# ----------------------------------------------------------------------------------------------
def harvest(
    loaded,
    corpus,
    out_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    saes: Mapping[int, Any] | None = None,
    block_len: int = 256,
    threshold: float = 1.0,
    batch_size: int = 16,
    shard_blocks: int = 64,
    max_blocks: int | None = None,
    max_blocks_per_doc: int | None = None,
    store_activations: bool = False,
    corpus_name: str = "",
    progress: bool = True,
    stop_after_shards: int | None = None,
) -> "Harvest":
    """Run (or resume) a harvest into ``out_dir`` and return a :class:`Harvest` reader.

    Parameters
    ----------
    loaded : featuregeo.io.models.LoadedModel
    corpus : Corpus or iterable of Document
        Read in order; blocks are cut by :func:`featuregeo.io.corpus.blocks`.
    out_dir : path
    layers : sequence of int, optional
        Layers whose residual stream is read (default: the SAE layers).
    saes : mapping layer -> sae-lens SAE, optional
        Encoders whose firing is recorded.  ``d_in`` must equal the model's d_model.
    block_len, threshold, batch_size, shard_blocks, max_blocks, max_blocks_per_doc
        See :class:`HarvestConfig`.
    store_activations : bool, default=False
        Also write the residual activations (float16, scaled per layer) of ``layers``.
    stop_after_shards : int, optional
        Stop after writing this many new shards (for tests of resumption).
    """
    import torch

    from featuregeo.io.corpus import blocks as corpus_blocks
    from featuregeo.io.models import batches, check_layers, iter_residual_stream

    saes = dict(saes or {})
    sae_layers = sorted(saes)
    layers = sorted(set(layers or []) | set(sae_layers))
    if not layers:
        raise InputError("layers: expected at least one layer (or SAEs) to harvest")
    layers = check_layers(loaded, layers)
    for L, sae in saes.items():
        d_in = int(sae.cfg.d_in)
        if d_in != loaded.d_model:
            raise InputError(f"saes[{L}]: the SAE reads d_model {d_in} but {loaded.name} has d_model "
                             f"{loaded.d_model}; expected an SAE trained on this model")
    cfg = HarvestConfig(
        layers=list(layers), sae_layers=sae_layers, block_len=block_len, threshold=float(threshold),
        batch_size=batch_size, shard_blocks=shard_blocks, max_blocks=max_blocks,
        max_blocks_per_doc=max_blocks_per_doc, store_activations=store_activations, model=loaded.name,
        saes={str(L): {"d_sae": int(saes[L].cfg.d_sae), "checksum": _sae_checksum(saes[L])} for L in sae_layers},
        corpus=corpus_name,
    )
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    manifest_path = out / "harvest.json"
    fp = _fingerprint(cfg, {})
    manifest: dict[str, Any]
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") != fp:
            raise InputError(f"{out}: holds a different harvest (fingerprint {manifest.get('fingerprint')} vs "
                             f"{fp}); expected an empty directory or the same configuration to resume")
    else:
        manifest = {"format": FORMAT_VERSION, "fingerprint": fp, "config": cfg.to_dict(), "d_model": loaded.d_model,
                    "activation_scale": {}, "complete": False}
        atomic_write_json(manifest_path, manifest)

    def shard_path(i: int) -> Path:
        return out / "shards" / f"shard_{i:06d}.npz"

    block_iter = corpus_blocks(corpus, loaded.tokenizer, block_len, add_bos=True, max_blocks=max_blocks,
                               max_blocks_per_doc=max_blocks_per_doc)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_blocks, unit="block", desc="harvest", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    tokens_done = 0
    new_shards = 0
    n_blocks = 0
    shard_index = 0
    try:
        for shard in batches(block_iter, shard_blocks):
            path = shard_path(shard_index)
            n_blocks += len(shard)
            if path.exists():  # finished earlier: skip without running the model
                shard_index += 1
                if bar is not None:
                    bar.update(len(shard))
                continue
            meta = {
                "doc_id": np.array([b.doc_id for b in shard]),
                "genre": np.array([b.genre for b in shard]),
                "source": np.array([b.source for b in shard]),
                "start": np.array([b.start for b in shard], dtype=np.int64),
            }
            fired: dict[int, list[np.ndarray]] = {L: [] for L in sae_layers}
            acts_out: dict[int, list[np.ndarray]] = {L: [] for L in layers} if store_activations else {}
            ids = [b.input_ids for b in shard]
            for rb in iter_residual_stream(loaded, ids, layers, batch_size=batch_size, seq_len=None,
                                           add_bos=False, drop_bos=True, out_dtype="float32"):
                mask = rb.mask
                for L in layers:
                    a = rb.acts[L]  # [B, T, d] float32
                    if store_activations:
                        scale = manifest["activation_scale"].get(str(L))
                        if scale is None:  # fixed from the first batch of the harvest, then recorded
                            norms = a[mask].norm(dim=-1)
                            scale = float(math.sqrt(loaded.d_model) / norms.mean().item())
                            manifest["activation_scale"][str(L)] = scale
                            atomic_write_json(manifest_path, manifest)
                        x = (a[mask] * scale).numpy()
                        if not np.isfinite(x.astype(np.float16)).all():
                            raise HarvestError(f"layer {L}: scaled activations overflow float16 "
                                               f"(max |x| {np.abs(x).max():.3g}); expected values below 65504")
                        acts_out[L].append(x.astype(np.float16))
                    if L in saes:
                        with torch.inference_mode():
                            f = saes[L].encode(a.to(saes[L].W_dec.dtype))
                        f = f.masked_fill(~mask[..., None], 0)
                        fired[L].append((f > threshold).any(dim=1).numpy())
                tokens_done += int(mask.sum())
            arrays = dict(meta)
            for L in sae_layers:
                fb = np.concatenate(fired[L])
                rows, cols = np.nonzero(fb)
                arrays[f"fire_{L}_indptr"] = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=fb.shape[0])))
                                                            ).astype(np.int64)
                arrays[f"fire_{L}_indices"] = cols.astype(np.int32)
                arrays[f"fire_{L}_shape"] = np.array(fb.shape, dtype=np.int64)
            for L, parts in acts_out.items():
                _write(out / "acts" / f"layer_{L}" / f"shard_{shard_index:06d}.npy", npy_bytes(np.concatenate(parts)))
            _write(path, npz_bytes(arrays))  # the shard file marks the shard done
            shard_index += 1
            new_shards += 1
            if bar is not None:
                bar.update(len(shard))
                bar.set_postfix(tok_s=f"{tokens_done / (time.perf_counter() - t0):.0f}")
            if stop_after_shards is not None and new_shards >= stop_after_shards:
                return Harvest(out)
    finally:
        if bar is not None:
            bar.close()
    manifest["complete"] = True
    manifest["n_blocks"] = n_blocks
    manifest["n_shards"] = shard_index
    atomic_write_json(manifest_path, manifest)
    return Harvest(out)


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
class Harvest:
    """Read a harvest directory: blocks, firing matrices, feature counts, activations."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        mp = self.path / "harvest.json"
        if not mp.exists():
            raise InputError(f"{self.path}: no harvest.json; expected a directory written by featuregeo's harvest")
        self.manifest = json.loads(mp.read_text())
        self.config = self.manifest["config"]
        self._shards = sorted((self.path / "shards").glob("shard_*.npz"))
        self._meta: dict[str, np.ndarray] | None = None

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def layers(self) -> list[int]:
        return list(self.config["layers"])

    @property
    def sae_layers(self) -> list[int]:
        return list(self.config["sae_layers"])

    def _load(self, i: int):
        return np.load(self._shards[i], allow_pickle=False)

    @property
    def blocks(self) -> dict[str, np.ndarray]:
        """Per-block metadata: doc_id, genre, source, start (concatenated over shards)."""
        if self._meta is None:
            parts: dict[str, list] = {"doc_id": [], "genre": [], "source": [], "start": []}
            for i in range(len(self._shards)):
                with self._load(i) as z:
                    for k in parts:
                        parts[k].append(z[k])
            self._meta = {k: (np.concatenate(v) if v else np.array([])) for k, v in parts.items()}
        return self._meta

    @property
    def n_blocks(self) -> int:
        return int(len(self.blocks["doc_id"]))

    def firing(self, layer: int):
        """``scipy.sparse.csr_matrix`` [n_blocks, n_features] of uint8 (1 = fired in the block)."""
        from scipy import sparse

        if layer not in self.sae_layers:
            raise InputError(f"layer: {layer} has no SAE in this harvest; expected one of {self.sae_layers}")
        mats = []
        for i in range(len(self._shards)):
            with self._load(i) as z:
                shape = tuple(z[f"fire_{layer}_shape"])
                ind = z[f"fire_{layer}_indices"]
                mats.append(sparse.csr_matrix((np.ones(ind.size, dtype=np.uint8), ind, z[f"fire_{layer}_indptr"]),
                                              shape=shape))
        if not mats:
            raise InputError(f"{self.path}: no finished shards; expected at least one complete block")
        return sparse.vstack(mats, format="csr")

    def feature_counts(self, layer: int) -> np.ndarray:
        """Number of blocks in which each feature fired."""
        return np.asarray(self.firing(layer).sum(axis=0)).ravel().astype(np.int64)

    def activation_scale(self, layer: int) -> float:
        return float(self.manifest["activation_scale"][str(layer)])

    def activation_files(self, layer: int) -> list[Path]:
        files = sorted((self.path / "acts" / f"layer_{layer}").glob("shard_*.npy"))
        if not files:
            raise InputError(f"{self.path}: no stored activations for layer {layer}; expected a harvest run with "
                             "store_activations=True")
        # only shards whose metadata file exists are complete
        done = {p.stem for p in self._shards}
        return [f for f in files if f.stem in done]

    def activations(self, layer: int, *, scaled: bool = True) -> Iterator[np.ndarray]:
        """Yield float32 token activations shard by shard (``scaled=False`` undoes the stored scale)."""
        s = 1.0 if scaled else 1.0 / self.activation_scale(layer)
        for f in self.activation_files(layer):
            yield np.load(f, mmap_mode="r", allow_pickle=False).astype(np.float32) * np.float32(s)

    def __repr__(self) -> str:
        return f"Harvest({str(self.path)!r}, blocks={self.n_blocks}, layers={self.layers}, complete={self.complete})"


__all__ = ["harvest", "Harvest", "HarvestConfig", "HarvestError", "npz_bytes"]

