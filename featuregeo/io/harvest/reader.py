"""Reading a harvest directory: blocks, firing matrices, feature counts, stored activations."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.io.harvest.files import finished_shards, read_manifest
from featuregeo.io.harvest.params import HarvestParams

BLOCK_FIELDS = ("doc_id", "genre", "source", "start")


class BlockTable(dict):
    """Per-block metadata, ``{"doc_id", "genre", "source", "start"} -> array``.

    A dict; calling it returns itself, so ``h.blocks["genre"]`` and ``h.blocks()["genre"]`` both work.
    """

    def __call__(self) -> "BlockTable":
        return self


class Harvest:
    """A harvest directory, read lazily.

    Parameters
    ----------
    path : path
        A directory written by :func:`featuregeo.io.harvest.harvest` (complete or not: the finished
        shards of an interrupted harvest are readable).

    Raises
    ------
    InputError
        One line naming the file: no or damaged ``harvest.json`` (bad JSON, wrong field types),
        missing shards, or (when read) a damaged shard.

    Examples
    --------
    >>> h = Harvest("out/harvest")                     # doctest: +SKIP
    >>> h.firing(12).shape                             # doctest: +SKIP
    (2048, 16384)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest: dict = read_manifest(self.path)
        self.config: dict = self.manifest["config"]
        self._shards = finished_shards(self.path, self.manifest)
        self._meta: BlockTable | None = None

    # -- facts from the manifest ----------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether every block of the corpus (up to ``max_blocks``) was harvested."""
        return bool(self.manifest.get("complete"))

    @property
    def fingerprint(self) -> str:
        """The harvest's identity: params, layers, model, SAE checksums and corpus fingerprint."""
        return str(self.manifest["fingerprint"])

    @property
    def layers(self) -> list[int]:
        """Every layer whose residual stream was read."""
        return list(self.config["layers"])

    @property
    def sae_layers(self) -> list[int]:
        """The layers with an SAE (firing recorded)."""
        return list(self.config["sae_layers"])

    @property
    def params(self) -> HarvestParams:
        """The :class:`HarvestParams` of the harvest (rebuilt from the config of older harvests)."""
        d = self.manifest.get("params")
        if not isinstance(d, dict):
            d = {k: v for k, v in self.config.items() if k != "layers"}
        return HarvestParams.from_dict(d)

    def n_features(self, layer: int) -> int:
        """Width (``d_sae``) of the SAE of ``layer``."""
        self._check_sae_layer(layer)
        return int(self.config["saes"][str(layer)]["d_sae"])

    @property
    def n_shards(self) -> int:
        """Number of finished shards."""
        return len(self._shards)

    # -- shards -----------------------------------------------------------------------------------
    def _read(self, i: int, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        p = self._shards[i]
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except KeyError as e:
            raise InputError(f"{p}: no array {e.args[0]!r}; expected a shard written by featuregeo's harvest for "
                             f"layers {self.sae_layers}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{p}: damaged shard ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "expected an .npz written by featuregeo's harvest — delete it and rerun the same "
                             "harvest command") from None

    def _check_sae_layer(self, layer: int) -> None:
        if layer not in self.sae_layers:
            raise InputError(f"layer: {layer} has no SAE in this harvest; expected one of {self.sae_layers}")

    @property
    def blocks(self) -> BlockTable:
        """Per-block metadata: doc_id, genre, source, start (concatenated over shards)."""
        if self._meta is None:
            parts: dict[str, list] = {k: [] for k in BLOCK_FIELDS}
            for i in range(len(self._shards)):
                for k, v in self._read(i, BLOCK_FIELDS).items():
                    parts[k].append(v)
            self._meta = BlockTable({k: (np.concatenate(v) if v else np.array([])) for k, v in parts.items()})
        return self._meta

    @property
    def n_blocks(self) -> int:
        """Number of harvested blocks (in finished shards)."""
        return int(len(self.blocks["doc_id"]))

    def firing(self, layer: int):
        """``scipy.sparse.csr_matrix`` [n_blocks, n_features] of uint8 (1 = fired in the block)."""
        from scipy import sparse

        self._check_sae_layer(layer)
        keys = (f"fire_{layer}_shape", f"fire_{layer}_indices", f"fire_{layer}_indptr")
        mats = []
        for i in range(len(self._shards)):
            z = self._read(i, keys)
            shape, ind, indptr = tuple(int(x) for x in z[keys[0]]), z[keys[1]], z[keys[2]]
            try:
                mats.append(sparse.csr_matrix((np.ones(ind.size, dtype=np.uint8), ind, indptr), shape=shape))
            except (ValueError, TypeError) as e:
                raise InputError(f"{self._shards[i]}: inconsistent firing arrays for layer {layer} ({e}); expected "
                                 "a shard written by featuregeo's harvest") from None
        if not mats:
            raise InputError(f"{self.path}: no finished shards; expected at least one complete block")
        return sparse.vstack(mats, format="csr")

    def feature_counts(self, layer: int) -> np.ndarray:
        """Number of blocks in which each feature fired."""
        return np.asarray(self.firing(layer).sum(axis=0)).ravel().astype(np.int64)

    # -- dashboards -------------------------------------------------------------------------------
    def has_dashboards(self, layer: int) -> bool:
        """Whether the harvest collected dashboards for ``layer`` (format 3 with ``dashboards`` on)."""
        return (layer in self.sae_layers and self.manifest.get("format", 0) >= 3
                and bool(self.config.get("dashboards", False)) and bool(self._shards))

    def dashboards(self, layer: int):
        """The :class:`~featuregeo.io.harvest.dashboards.FeatureDashboards` of ``layer``, merged over
        the finished shards, with the logit effects when they were written."""
        from featuregeo.io.harvest.dashboards import logits_path, merge_shards, read_logits

        self._check_sae_layer(layer)
        if not self.has_dashboards(layer):
            raise InputError(f"{self.path}: no dashboards for layer {layer}; expected a harvest run with "
                             "dashboards=True (featuregeo >= format 3) and at least one finished shard")
        p = self.params
        dash = merge_shards(layer, self._read, len(self._shards), p.dashboard_k, p.dashboard_window)
        lp = logits_path(self.path, layer)
        if lp.is_file():
            try:
                read_logits(lp, dash)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                raise InputError(f"{lp}: damaged logit effects ({type(e).__name__}); delete it and rerun the same "
                                 "harvest command") from None
        return dash

    # -- activations ------------------------------------------------------------------------------
    def activation_scale(self, layer: int) -> float:
        """The constant the stored activations of ``layer`` were multiplied by (mean token norm -> sqrt(d_model))."""
        scales = self.manifest.get("activation_scale", {})
        if str(layer) not in scales:
            raise InputError(f"{self.path}: no stored activations for layer {layer}; expected a harvest run with "
                             f"store_activations=True and one of the layers {self.layers}")
        return float(scales[str(layer)])

    def activation_files(self, layer: int) -> list[Path]:
        """The ``.npy`` files of ``layer``'s activations, one per finished shard."""
        files = sorted((self.path / "acts" / f"layer_{layer}").glob("shard_*.npy"))
        if not files:
            raise InputError(f"{self.path}: no stored activations for layer {layer}; expected a harvest run with "
                             "store_activations=True")
        done = {p.stem for p in self._shards}  # only shards whose metadata file exists are complete
        return [f for f in files if f.stem in done]

    def activations(self, layer: int, *, scaled: bool = True) -> Iterator[np.ndarray]:
        """Yield float32 token activations shard by shard (``scaled=False`` undoes the stored scale)."""
        s = 1.0 if scaled else 1.0 / self.activation_scale(layer)
        for f in self.activation_files(layer):
            try:
                a = np.load(f, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise InputError(f"{f}: damaged activation file ({e}); expected an .npy written by featuregeo's "
                                 "harvest — delete it and its shard, then rerun the same harvest command") from None
            yield a.astype(np.float32) * np.float32(s)

    def __repr__(self) -> str:
        return (f"Harvest({str(self.path)!r}, blocks={self.n_blocks}, layers={self.layers}, "
                f"complete={self.complete})")
