"""Data model: SAE decoder directions as feature point clouds, and suites of them across layers.

A :class:`FeatureCloud` is the set of decoder rows ``W_dec [n_features, d_model]`` of one SAE,
with the original feature ids of the rows it keeps (rows that are NaN/inf or have zero norm are
excluded and counted), the layer, and where it came from (:class:`Provenance`).

Rows may live in memory or be streamed from a file chunk by chunk (a :class:`RowReader`), so a
1M-feature decoder never has to sit in memory as float32.  A :class:`Suite` maps layers to clouds
and loads one layer at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import file_fingerprint, fingerprint

#: exclusion reasons, in the order they are tested
EXCLUSION_REASONS = ("nonfinite", "dead")
DEFAULT_CHUNK_ROWS = 16384


@dataclass(frozen=True)
class Provenance:
    """Where a point cloud came from.  Unknown fields are ``None``."""

    source: str
    model_name: str | None = None
    hook_name: str | None = None
    release: str | None = None
    sae_id: str | None = None
    neuronpedia_id: str | None = None
    width: int | None = None
    l0: float | None = None
    path: str | None = None
    decoder_key: str | None = None
    transposed: bool = False
    stored_dtype: str | None = None
    architecture: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Provenance":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class RowReader(Protocol):
    """Anything that can hand out rows ``[start, stop)`` of an ``[n_rows, d_model]`` matrix."""

    shape: tuple[int, int]
    dtype: np.dtype

    def read(self, start: int, stop: int) -> np.ndarray: ...


class ArrayRows:
    """A :class:`RowReader` over an in-memory (or memory-mapped) 2-D array."""

    def __init__(self, array: np.ndarray, transpose: bool = False):
        if array.ndim != 2:
            raise InputError(f"decoder: expected a 2-D array [n_features, d_model]. Got shape {array.shape} instead.")
        self._a = array
        self._t = transpose
        self.shape = (array.shape[1], array.shape[0]) if transpose else tuple(array.shape)
        self.dtype = array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._t:
            return np.ascontiguousarray(self._a[:, start:stop].T)
        return self._a[start:stop]


def _row_mask(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row flags (nonfinite, dead) for a float chunk."""
    finite = np.isfinite(chunk).all(axis=1)
    nonfinite = ~finite
    with np.errstate(invalid="ignore", over="ignore"):
        dead = finite & ~np.any(chunk != 0, axis=1)
    return nonfinite, dead


class FeatureCloud:
    """Decoder directions of one SAE as a point cloud.

    Parameters
    ----------
    rows : ndarray or RowReader
        ``[n_features, d_model]`` decoder rows (any float dtype; float32 on access).
    layer : int or None
        The layer the SAE reads.
    provenance : Provenance
        Where the rows came from.
    exclude_dead : bool, default=True
        Exclude zero-norm rows from the geometry (they are counted in ``exclusions``).
    feature_ids : ndarray, optional
        Original feature ids of ``rows`` (default ``arange(n)``).

    Rows containing NaN or inf are always excluded and counted.  The kept rows are available as
    :attr:`vectors` (float32, materialised on first access) or streamed with :meth:`iter_chunks`.
    """

    def __init__(
        self,
        rows: np.ndarray | RowReader,
        layer: int | None = None,
        provenance: Provenance | None = None,
        *,
        exclude_dead: bool = True,
        feature_ids: np.ndarray | None = None,
    ):
        self._reader: RowReader = ArrayRows(rows) if isinstance(rows, np.ndarray) else rows
        n, d = self._reader.shape
        if n < 1 or d < 1:
            raise InputError(f"decoder: expected at least one feature and one dimension. Got shape {(n, d)} instead.")
        self.layer = layer
        self.provenance = provenance or Provenance(source="<array>")
        self.exclude_dead = exclude_dead
        self.n_total = int(n)
        self.d_model = int(d)
        self._source_ids = None if feature_ids is None else np.asarray(feature_ids, dtype=np.int64)
        if self._source_ids is not None and self._source_ids.shape != (n,):
            raise InputError(f"feature_ids: expected {n} ids. Got {self._source_ids.shape} instead.")
        self._vectors: np.ndarray | None = None
        self._ids: np.ndarray | None = None
        self._exclusions: dict[str, int] | None = None
        self._fp: str | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_array(cls, array: np.ndarray, layer: int | None = None, source: str = "<array>", **kw) -> "FeatureCloud":
        return cls(np.asarray(array), layer, Provenance(source=source, width=int(np.shape(array)[0])), **kw)

    # -- streaming ----------------------------------------------------------------------------
    def iter_chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(feature_ids, float32 rows)`` for the kept rows, chunk by chunk.

        When the rows are already materialised they are sliced (no copy); otherwise they are read
        from the underlying reader and filtered on the fly, and the exclusion counts are recorded.
        """
        if self._vectors is not None:
            for s in range(0, self._vectors.shape[0], chunk_rows):
                yield self._ids[s:s + chunk_rows], self._vectors[s:s + chunk_rows]
            return
        counts = dict.fromkeys(EXCLUSION_REASONS, 0)
        for s in range(0, self.n_total, chunk_rows):
            e = min(self.n_total, s + chunk_rows)
            raw = self._reader.read(s, e)
            chunk = np.asarray(raw, dtype=np.float32)
            ids = self._source_ids[s:e] if self._source_ids is not None else np.arange(s, e, dtype=np.int64)
            nonfinite, dead = _row_mask(chunk)
            counts["nonfinite"] += int(nonfinite.sum())
            drop = nonfinite | dead if self.exclude_dead else nonfinite
            counts["dead"] += int(dead.sum())
            if drop.any():
                keep = ~drop
                chunk, ids = chunk[keep], ids[keep]
            yield ids, chunk
        self._exclusions = counts

    def _materialise(self) -> None:
        r = self._reader
        if isinstance(r, ArrayRows) and not r._t and r.dtype == np.float32:
            # in-memory float32: filter with one mask, no copy when nothing is excluded
            a = r._a
            nonfinite, dead = _row_mask(a)
            self._exclusions = {"nonfinite": int(nonfinite.sum()), "dead": int(dead.sum())}
            drop = nonfinite | dead if self.exclude_dead else nonfinite
            ids = self._source_ids if self._source_ids is not None else np.arange(a.shape[0], dtype=np.int64)
            if drop.any():
                self._vectors, self._ids = np.ascontiguousarray(a[~drop]), ids[~drop]
            else:
                self._vectors, self._ids = np.ascontiguousarray(a), ids
        else:
            parts, idparts = [], []
            for ids, chunk in self.iter_chunks():
                parts.append(chunk)
                idparts.append(ids)
            self._vectors = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)
            self._ids = np.concatenate(idparts)
        if self._vectors.shape[0] == 0:
            raise InputError(
                f"{self.provenance.source}: every decoder row was excluded ({self.exclusions_summary()}); "
                "expected at least one finite, non-zero row"
            )

    # -- views --------------------------------------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        """Kept decoder rows, float32 ``[n_features, d_model]``."""
        if self._vectors is None:
            self._materialise()
        return self._vectors

    @property
    def feature_ids(self) -> np.ndarray:
        """Original feature ids of the kept rows."""
        if self._ids is None:
            self._materialise()
        return self._ids

    @property
    def exclusions(self) -> dict[str, int]:
        """Counts of excluded rows by reason (``nonfinite``, ``dead``; dead counted even if kept)."""
        if self._exclusions is None:
            for _ in self.iter_chunks():
                pass
        return dict(self._exclusions)

    @property
    def n_excluded(self) -> int:
        ex = self.exclusions
        return ex["nonfinite"] + (ex["dead"] if self.exclude_dead else 0)

    @property
    def n_features(self) -> int:
        """Number of kept rows."""
        return self.n_total - self.n_excluded

    @property
    def is_materialised(self) -> bool:
        return self._vectors is not None

    def exclusions_summary(self) -> str:
        ex = self._exclusions or {}
        return ", ".join(f"{k}={v}" for k, v in ex.items()) or "no exclusions"

    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1)

    def fingerprint(self) -> str:
        """Identity and content of this cloud, for checkpoints: the source, the file's bytes (size,
        mtime and sampled hash for large files; see :func:`~featuregeo.core.util.file_fingerprint`),
        or the array's bytes when the rows live only in memory; plus layer and exclusion policy."""
        if self._fp is None:
            path = self.provenance.path
            if path:
                try:
                    content = file_fingerprint(path)
                except OSError:
                    content = None
            else:
                content = None
            if content is None:
                if isinstance(self._reader, ArrayRows):
                    content = fingerprint(self._reader._a)
                else:
                    content = fingerprint(self.provenance.to_dict(), [float(x) for x in
                                                                      np.asarray(self._reader.read(0, min(64, self.n_total)),
                                                                                 dtype=np.float64).ravel()])
            self._fp = fingerprint(self.provenance.source, content, self.layer, self.exclude_dead,
                                   (self.n_total, self.d_model))
        return self._fp

    def describe(self) -> dict:
        return {
            "layer": self.layer,
            "n_total": self.n_total,
            "n_features": self.n_features,
            "n_excluded": self.n_excluded,
            "exclusions": self.exclusions,
            "d_model": self.d_model,
            "provenance": self.provenance.to_dict(),
        }

    def __repr__(self) -> str:
        return (f"FeatureCloud(layer={self.layer}, n_total={self.n_total}, d_model={self.d_model}, "
                f"source={self.provenance.source!r})")


class Suite:
    """An ordered mapping layer -> :class:`FeatureCloud`, loaded lazily one layer at a time.

    Parameters
    ----------
    layers : sequence of int
        The available layers, in order.
    loader : callable
        ``loader(layer) -> FeatureCloud``.  Called on every access; nothing is cached, so iterating a
        26-layer x 65k suite holds one layer in memory at a time.
    name : str
        The source string the suite was made from.
    """

    def __init__(self, layers: Sequence[int], loader: Callable[[int], FeatureCloud], name: str = "<suite>"):
        self._layers = list(layers)
        if not self._layers:
            raise InputError(f"{name}: the suite has no layers; expected at least one")
        self._loader = loader
        self.name = name
        self._d_model: int | None = None
        self._d_model_layer: int | None = None

    @property
    def layers(self) -> list[int]:
        return list(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __contains__(self, layer: int) -> bool:
        return layer in self._layers

    @property
    def d_model(self) -> int | None:
        """d_model of the layers loaded so far (checked to be identical across layers)."""
        return self._d_model

    def load(self, layer: int) -> FeatureCloud:
        if layer not in self._layers:
            raise InputError(f"{self.name}: layer {layer} is not in the suite; available layers are {self._layers}")
        cloud = self._loader(layer)
        if self._d_model is None:
            self._d_model, self._d_model_layer = cloud.d_model, layer
        elif cloud.d_model != self._d_model:
            raise InputError(
                f"{self.name}: layer {layer} has d_model {cloud.d_model} but layer {self._d_model_layer} has "
                f"{self._d_model}; expected one d_model across the suite"
            )
        return cloud

    __getitem__ = load

    def select(self, layers: Sequence[int] | None) -> "Suite":
        """A sub-suite of the given layers (all when None)."""
        if layers is None:
            return self
        missing = [x for x in layers if x not in self._layers]
        if missing:
            raise InputError(f"--layers: layers {missing} are not in {self.name}; available layers are {self._layers}")
        s = Suite([x for x in layers], self._loader, self.name)
        return s

    def __iter__(self) -> Iterator[tuple[int, FeatureCloud]]:
        for layer in self._layers:
            yield layer, self.load(layer)

    def __repr__(self) -> str:
        return f"Suite(name={self.name!r}, layers={self._layers})"


__all__ = ["Provenance", "FeatureCloud", "Suite", "RowReader", "ArrayRows", "EXCLUSION_REASONS"]
