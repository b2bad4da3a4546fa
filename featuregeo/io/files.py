"""Decoder matrices from bare files: ``.safetensors``, ``.npy``, ``.npz``, ``.pt``/``.pth``.

Every reader lists the arrays a file holds (name, shape, stored dtype) without reading their data,
finds the decoder among them (:func:`find_decoder_key`), decides whether its rows or its columns are
the features (:func:`decide_orientation`) and hands back a :class:`~featuregeo.core.data.RowReader` that
reads rows ``[start, stop)`` on demand.  ``.safetensors`` and ``.npy`` are memory-mapped, so a
1,048,576 x 2,304 float16 decoder is streamed chunk by chunk and never materialised whole.

Nothing here unpickles: ``.npy``/``.npz`` are read with ``allow_pickle=False`` and ``.pt`` with
``torch.load(weights_only=True)``; files that need arbitrary pickles are refused.
"""

from __future__ import annotations

import json
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from featuregeo.core.data import ArrayRows, FeatureCloud, Provenance, RowReader
from featuregeo.core.errors import InputError

#: file extensions this module reads (lower case, with the dot)
FILE_EXTENSIONS = (".safetensors", ".npy", ".npz", ".pt", ".pth")

#: names a decoder goes by, most specific first (compared case-insensitively, as the last
#: dotted component(s) of a key, so ``sae.W_dec`` and ``model/decoder.weight`` match too)
DECODER_NAMES = ("w_dec", "wdec", "w_d", "w_decoder", "decoder.weight", "decoder_weight", "dec.weight",
                 "decoder", "dec")
#: 1-D arrays whose length is d_model
_DECODER_BIAS_NAMES = ("b_dec", "decoder.bias", "dec.bias", "b_d", "decoder_bias", "pre_bias", "bias_dec")
#: 1-D arrays whose length is n_features
_FEATURE_VECTOR_NAMES = ("b_enc", "encoder.bias", "enc.bias", "b_e", "encoder_bias", "threshold",
                         "log_threshold", "latent_bias")
#: encoder matrices stored [d_model, n_features] (sae-lens convention)
_ENCODER_IN_FIRST = ("w_enc", "wenc", "w_e", "w_encoder")
#: encoder matrices stored [n_features, d_model] (``nn.Linear(d_model, n_features).weight``)
_ENCODER_IN_LAST = ("encoder.weight", "enc.weight")
#: config keys giving d_model / n_features
_CFG_DMODEL_KEYS = ("d_in", "d_model", "activation_dim", "input_dim")
_CFG_NFEAT_KEYS = ("d_sae", "dict_size", "num_latents", "n_features", "dictionary_size")

ORIENTATIONS = ("auto", "rows", "columns")
_EXPECT_DECODER = "a 2-D decoder array named W_dec, decoder.weight, decoder, dec.weight or W_d (or a file holding exactly one 2-D array)"


@dataclass(frozen=True)
class ArrayInfo:
    """Name, shape and stored dtype (e.g. ``"float16"``, ``"bfloat16"``) of one array in a file."""

    key: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class _Opened:
    """A file's table of arrays plus a factory for row readers (internal)."""

    arrays: dict[str, ArrayInfo]
    reader: Callable[[str, bool], RowReader]
    cfg: dict


# ------------------------------------------------------------------------------------------------
# decoder lookup and orientation
# ------------------------------------------------------------------------------------------------
def _norm_key(key: str) -> str:
    return key.lower().replace("/", ".")


def _match_names(keys: list[str], names: tuple[str, ...]) -> list[list[str]]:
    """For each name, the keys equal to it or ending in ``.name`` (case-insensitive)."""
    out = []
    for name in names:
        out.append([k for k in keys if _norm_key(k) == name or _norm_key(k).endswith("." + name)])
    return out


def _shape_list(arrays: Mapping[str, ArrayInfo], limit: int = 12) -> str:
    items = [f"{k} {list(a.shape)}" for k, a in arrays.items()]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


def find_decoder_key(arrays: Mapping[str, ArrayInfo], where: str) -> str:
    """The key of the decoder matrix among ``arrays``.

    Parameters
    ----------
    arrays : mapping of str to ArrayInfo
        The arrays of one file.
    where : str
        The file, for error messages.

    Returns
    -------
    str
        The first of :data:`DECODER_NAMES` that matches (as the whole key or its last dotted
        components, case-insensitively); failing that, the only 2-D array.

    Raises
    ------
    InputError
        No decoder, several equally good candidates, or a candidate that is not 2-D.
    """
    keys = list(arrays)
    if not keys:
        raise InputError(f"{where}: the file holds no arrays; expected {_EXPECT_DECODER}")
    for matches in _match_names(keys, DECODER_NAMES):
        if not matches:
            continue
        two_d = [k for k in matches if len(arrays[k].shape) == 2]
        if len(two_d) == 1 or (len(matches) == 1 and not two_d):
            key = two_d[0] if two_d else matches[0]
            if arrays[key].dtype == "object":
                _check_npy_dtype(np.dtype(object), f"{where}[{key}]")
            shape = arrays[key].shape
            if len(shape) != 2:
                raise InputError(
                    f"{where}: decoder {key!r} has shape {list(shape)}; expected a 2-D [n_features, d_model] "
                    f"matrix. Got {len(shape)}-D instead."
                )
            return key
        if len(two_d) > 1:
            raise InputError(
                f"{where}: several decoders found {two_d}; expected exactly one (save one SAE per file)"
            )
    two_d = [k for k in keys if len(arrays[k].shape) == 2]
    if len(keys) > 1:  # an encoder is never the decoder
        encoders = {k for ks in _match_names(two_d, _ENCODER_IN_FIRST + _ENCODER_IN_LAST + ("encoder", "enc"))
                    for k in ks}
        two_d = [k for k in two_d if k not in encoders]
    if len(two_d) == 1:
        return two_d[0]
    raise InputError(f"{where}: no decoder found; expected {_EXPECT_DECODER}. Got {_shape_list(arrays)} instead.")


def _cfg_int(cfg: Mapping, keys: tuple[str, ...]) -> tuple[str, int] | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
            return k, int(v)
    return None


def decide_orientation(
    opened: _Opened, key: str, orientation: str, where: str
) -> tuple[bool, str]:
    """Whether the decoder ``key`` must be transposed to put features in rows, and why.

    Evidence, in order: the config's ``d_in``/``d_sae``; a decoder bias (length d_model); an encoder
    bias or threshold (length n_features); an encoder matrix of known convention; finally the longer
    axis is taken to be the features.  ``orientation="rows"``/``"columns"`` overrides all of it.
    """
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation: expected one of {list(ORIENTATIONS)}. Got {orientation!r} instead.")
    a, b = opened.arrays[key].shape
    if orientation == "rows":
        return False, "orientation='rows'"
    if orientation == "columns":
        return True, "orientation='columns'"

    def by_dmodel(d: int, why: str) -> tuple[bool, str] | None:
        if b == d and a != d:
            return False, why
        if a == d and b != d:
            return True, why
        return None

    def by_nfeat(n: int, why: str) -> tuple[bool, str] | None:
        if a == n and b != n:
            return False, why
        if b == n and a != n:
            return True, why
        return None

    # 1. the config
    d_cfg = _cfg_int(opened.cfg, _CFG_DMODEL_KEYS)
    n_cfg = _cfg_int(opened.cfg, _CFG_NFEAT_KEYS)
    if d_cfg is not None:
        if d_cfg[1] not in (a, b):
            raise InputError(
                f"{where}: config {d_cfg[0]}={d_cfg[1]} does not match decoder {key!r} of shape {[a, b]}; "
                "expected the decoder to have d_model on one axis"
            )
        res = by_dmodel(d_cfg[1], f"config {d_cfg[0]}={d_cfg[1]}")
        if res:
            return res
    if n_cfg is not None and n_cfg[1] in (a, b):
        res = by_nfeat(n_cfg[1], f"config {n_cfg[0]}={n_cfg[1]}")
        if res:
            return res
    keys = list(opened.arrays)
    one_d = {k: v for k, v in opened.arrays.items() if len(v.shape) == 1}
    # 2. biases
    for names, fn, what in ((_DECODER_BIAS_NAMES, by_dmodel, "decoder bias"),
                            (_FEATURE_VECTOR_NAMES, by_nfeat, "encoder bias")):
        for matches in _match_names(list(one_d), names):
            for m in matches:
                res = fn(one_d[m].shape[0], f"{what} {m!r} of length {one_d[m].shape[0]}")
                if res:
                    return res
    # 3. encoder matrices of known convention
    two_d = {k: v for k, v in opened.arrays.items() if len(v.shape) == 2 and k != key}
    for names, axis in ((_ENCODER_IN_FIRST, 0), (_ENCODER_IN_LAST, 1)):
        for matches in _match_names([k for k in keys if k in two_d], names):
            for m in matches:
                res = by_dmodel(two_d[m].shape[axis], f"encoder {m!r} of shape {list(two_d[m].shape)}")
                if res:
                    return res
    # 4. the longer axis is the features
    if a >= b:
        return False, "the longer axis taken as features" if a > b else "square decoder taken as rows"
    return True, "the longer axis taken as features"


# ------------------------------------------------------------------------------------------------
# row readers
# ------------------------------------------------------------------------------------------------
class SafetensorsRows:
    """Rows of one tensor in a ``.safetensors`` file, read on demand with ``get_slice``.

    Parameters
    ----------
    path : str or Path
        The file.
    key : str
        The tensor (2-D).
    transpose : bool, default=False
        The tensor is ``[d_model, n_features]``; rows are read as column slices.
    """

    def __init__(self, path: str | Path, key: str, transpose: bool = False):
        from safetensors import safe_open

        self._path, self._key, self._t = str(path), key, transpose
        self._open = safe_open
        with safe_open(self._path, framework="numpy") as f:
            sl = f.get_slice(key)
            shape = tuple(int(s) for s in sl.get_shape())
            self.stored_dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype())
        self.shape = (shape[1], shape[0]) if transpose else shape
        self.dtype = np.dtype(self.stored_dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        with self._open(self._path, framework="numpy") as f:
            sl = f.get_slice(self._key)
            return np.ascontiguousarray(sl[:, start:stop].T) if self._t else sl[start:stop]


class RawBF16Rows:
    """Rows of a bfloat16 tensor at a byte offset of a file (numpy has no bfloat16).

    The data are memory-mapped as uint16 and widened to float32 chunk by chunk.
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, int], transpose: bool = False):
        self._mm = np.memmap(path, dtype="<u2", mode="r", offset=offset, shape=shape)
        self._t = transpose
        self.shape = (shape[1], shape[0]) if transpose else tuple(shape)
        self.dtype = np.dtype(np.float32)
        self.stored_dtype = "bfloat16"

    def read(self, start: int, stop: int) -> np.ndarray:
        raw = self._mm[:, start:stop].T if self._t else self._mm[start:stop]
        return (np.ascontiguousarray(raw).astype(np.uint32) << 16).view(np.float32)


class TorchRows:
    """Rows of a (possibly memory-mapped) torch tensor, converted to numpy chunk by chunk."""

    def __init__(self, tensor: Any, transpose: bool = False):
        self._x = tensor
        self._t = transpose
        a, b = (int(s) for s in tensor.shape)
        self.shape = (b, a) if transpose else (a, b)
        self.stored_dtype = str(tensor.dtype).replace("torch.", "")
        self._widen = self.stored_dtype not in ("float16", "float32", "float64")
        self.dtype = np.dtype(np.float32) if self._widen else np.dtype(self.stored_dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        x = self._x[:, start:stop].T if self._t else self._x[start:stop]
        if self._widen:
            x = x.float()
        return x.contiguous().numpy()


_SAFETENSORS_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
                       "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
                       "BOOL": "bool", "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2"}
_FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")


# ------------------------------------------------------------------------------------------------
# per-format openers
# ------------------------------------------------------------------------------------------------
def _one_line(e: BaseException, limit: int = 160) -> str:
    msg = " ".join(str(e).split())
    return (msg[:limit] + "...") if len(msg) > limit else msg


def _sibling_cfg(path: Path) -> dict:
    """``cfg.json`` next to a ``sae_weights.safetensors`` (a sae-lens folder), else ``{}``."""
    cfg_path = path.parent / "cfg.json"
    if path.name != "sae_weights.safetensors" or not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _open_safetensors(path: Path) -> _Opened:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            arrays = {}
            for k in keys:
                sl = f.get_slice(k)
                dt = sl.get_dtype()
                arrays[k] = ArrayInfo(k, tuple(int(s) for s in sl.get_shape()), _SAFETENSORS_DTYPES.get(dt, dt))
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            f"{path}: not a readable safetensors file ({_one_line(e)}); expected a complete .safetensors file"
        ) from None
    cfg = _sibling_cfg(path)
    for k in _CFG_DMODEL_KEYS + _CFG_NFEAT_KEYS:  # string metadata such as {"d_in": "2304"}
        if k in meta and k not in cfg and str(meta[k]).isdigit():
            cfg[k] = int(meta[k])

    def reader(key: str, transpose: bool) -> RowReader:
        if arrays[key].dtype == "bfloat16":
            offset, shape = _safetensors_offset(path, key)
            return RawBF16Rows(path, offset, shape, transpose)
        return SafetensorsRows(path, key, transpose)

    return _Opened(arrays, reader, cfg)


def _safetensors_offset(path: Path, key: str) -> tuple[int, tuple[int, int]]:
    """Absolute byte offset and shape of ``key`` in a safetensors file (from its JSON header)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    info = header[key]
    begin, _ = info["data_offsets"]
    return 8 + n + int(begin), tuple(int(s) for s in info["shape"])


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _npy_header(fp, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            return fmt.read_array_header_1_0(fp)
        return fmt.read_array_header_2_0(fp)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{where}: not a readable .npy array ({_one_line(e)}); expected a file written by numpy.save") from None


def _check_npy_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise InputError(
            f"{where}: holds Python objects that would have to be unpickled; expected a plain numeric array "
            "(featuregeo never unpickles). Re-save the decoder with numpy.save / safetensors"
        )


def _open_npy(path: Path) -> _Opened:
    with open(path, "rb") as fh:
        head = fh.read(6)
        if head != _NPY_MAGIC:
            raise InputError(f"{path}: not a .npy file (bad magic bytes); expected a file written by numpy.save")
        fh.seek(0)
        shape, _, dtype = _npy_header(fh, str(path))
    _check_npy_dtype(dtype, str(path))
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: corrupt or truncated .npy file ({_one_line(e)}); expected a complete numpy.save file") from None
    key = path.stem
    arrays = {key: ArrayInfo(key, tuple(arr.shape), arr.dtype.name)}
    return _Opened(arrays, lambda k, t: ArrayRows(arr, transpose=t), {})


def _open_npz(path: Path) -> _Opened:
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(4)
    if head not in _ZIP_MAGICS:
        raise InputError(f"{path}: not a .npz archive (bad magic bytes); expected a file written by numpy.savez")
    try:
        npz = np.load(path, allow_pickle=False)
        arrays: dict[str, ArrayInfo] = {}
        for k in npz.files:
            with npz.zip.open(k + ".npy") as member:
                shape, _, dtype = _npy_header(member, f"{path}[{k}]")
            arrays[k] = ArrayInfo(k, tuple(shape), "object" if dtype.hasobject else dtype.name)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: corrupt or truncated .npz archive ({_one_line(e)}); expected a complete numpy.savez file") from None

    def load(key: str) -> np.ndarray:
        if arrays[key].dtype == "object":
            _check_npy_dtype(np.dtype(object), f"{path}[{key}]")
        try:
            return npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}[{key}]: corrupt or truncated array ({_one_line(e)}); expected a complete numpy.savez file") from None

    return _Opened(arrays, lambda k, t: ArrayRows(load(k), transpose=t), {})


def _flatten(obj: Any, prefix: str, tensors: dict, cfg: dict, is_tensor: Callable[[Any], bool]) -> None:
    if is_tensor(obj):
        tensors[prefix or "tensor"] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if str(k).lower() in ("cfg", "config", "sae_cfg", "hparams") and isinstance(v, Mapping):
                cfg.update({kk: vv for kk, vv in v.items() if isinstance(kk, str)})
            _flatten(v, name, tensors, cfg, is_tensor)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, cfg, is_tensor)
    elif prefix and isinstance(obj, (int, float, str, bool)) and "." not in prefix:
        cfg.setdefault(prefix, obj)


def _open_torch(path: Path) -> _Opened:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head not in _ZIP_MAGICS and not head.startswith(b"\x80"):
        raise InputError(f"{path}: not a PyTorch file (bad magic bytes); expected a file written by torch.save")
    import pickle

    import torch

    def load(mmap: bool):
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = load(mmap=False)  # legacy (non-zip) serialisation cannot be memory-mapped
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "GLOBAL" in msg:
            raise InputError(
                f"{path}: the file needs arbitrary Python objects unpickled ({_one_line(msg.split('WeightsUnpickler error:')[-1], 100)}); "
                "expected tensors or a state dict loadable with torch.load(weights_only=True) - featuregeo never "
                "unpickles; re-save with torch.save(model.state_dict()) or safetensors"
            ) from None
        raise InputError(f"{path}: corrupt or truncated PyTorch file ({_one_line(msg, 100)}); expected a file written by torch.save") from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError, KeyError, TypeError) as e:
        raise InputError(f"{path}: corrupt or truncated PyTorch file ({_one_line(e)}); expected a file written by torch.save") from None

    tensors: dict[str, Any] = {}
    cfg: dict = {}
    _flatten(obj, "", tensors, cfg, lambda x: isinstance(x, torch.Tensor))
    arrays = {k: ArrayInfo(k, tuple(int(s) for s in t.shape), str(t.dtype).replace("torch.", ""))
              for k, t in tensors.items()}

    return _Opened(arrays, lambda k, t: TorchRows(tensors[k], transpose=t), cfg)


_OPENERS: dict[str, Callable[[Path], _Opened]] = {
    ".safetensors": _open_safetensors,
    ".npy": _open_npy,
    ".npz": _open_npz,
    ".pt": _open_torch,
    ".pth": _open_torch,
}


# ------------------------------------------------------------------------------------------------
# public entry point
# ------------------------------------------------------------------------------------------------
def open_decoder(path: str | Path, orientation: str = "auto") -> tuple[RowReader, dict]:
    """Open the decoder in a file as a :class:`~featuregeo.core.data.RowReader` (rows = features).

    Parameters
    ----------
    path : str or Path
        A ``.safetensors``, ``.npy``, ``.npz``, ``.pt`` or ``.pth`` file.
    orientation : {"auto", "rows", "columns"}, default="auto"
        Whether features are the rows or the columns of the stored matrix; ``"auto"`` decides
        from the config, biases and encoder shapes, else takes the longer axis as features.

    Returns
    -------
    reader : RowReader
        ``[n_features, d_model]`` rows, read on demand.
    info : dict
        ``decoder_key``, ``transposed``, ``stored_dtype``, ``orientation_reason`` and ``cfg``
        (the sibling ``cfg.json`` of a ``sae_weights.safetensors``, or a config found in a ``.pt``).

    Raises
    ------
    InputError
        Missing, unreadable, truncated or pickle-only file; unknown extension; no decoder; a
        decoder that is not 2-D or not a float array.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _OPENERS:
        raise InputError(f"{path}: unknown file type {ext or '(no extension)'!r}; expected one of {list(FILE_EXTENSIONS)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected an existing {ext} file")
    opened = _OPENERS[ext](path)
    key = find_decoder_key(opened.arrays, str(path))
    info = opened.arrays[key]
    if info.dtype not in _FLOAT_DTYPES:
        raise InputError(f"{path}: decoder {key!r} has dtype {info.dtype}; expected a float array (float16, bfloat16, float32 or float64)")
    if min(info.shape) < 1:
        raise InputError(f"{path}: decoder {key!r} has shape {list(info.shape)}; expected at least one feature and one dimension")
    transpose, reason = decide_orientation(opened, key, orientation, str(path))
    reader = opened.reader(key, transpose)
    if transpose and orientation == "auto":
        warnings.warn(
            f"{path}: decoder {key!r} is stored as {list(info.shape)} = [d_model, n_features] ({reason}); "
            "using its columns as features (pass orientation='rows' to override)",
            UserWarning,
            stacklevel=3,
        )
    return reader, {
        "decoder_key": key,
        "transposed": transpose,
        "stored_dtype": info.dtype,
        "orientation_reason": reason,
        "cfg": opened.cfg,
    }


def load_file_cloud(
    path: str | Path,
    *,
    layer: int | None = None,
    source: str | None = None,
    exclude_dead: bool = True,
    orientation: str = "auto",
) -> FeatureCloud:
    """A :class:`~featuregeo.core.data.FeatureCloud` over the decoder in a bare file (rows streamed lazily).

    Parameters
    ----------
    path : str or Path
        The file (see :func:`open_decoder`).
    layer : int, optional
        The layer, if known.
    source : str, optional
        The source string recorded in the provenance (default: the path).
    exclude_dead : bool, default=True
        Passed to :class:`~featuregeo.core.data.FeatureCloud`.
    orientation : {"auto", "rows", "columns"}, default="auto"
        See :func:`open_decoder`.
    """
    reader, info = open_decoder(path, orientation)
    cfg = info["cfg"]
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}

    def pick(name: str, *alts: str) -> Any:
        for k in (name, *alts):
            v = meta.get(k, cfg.get(k))
            if v is not None:
                return v
        return None

    prov = Provenance(
        source=source or str(path),
        model_name=pick("model_name"),
        hook_name=pick("hook_name", "hook_point"),
        neuronpedia_id=pick("neuronpedia_id"),
        width=int(reader.shape[0]),
        path=str(Path(path).resolve()),
        decoder_key=info["decoder_key"],
        transposed=bool(info["transposed"]),
        stored_dtype=info["stored_dtype"],
        architecture=pick("architecture"),
    )
    return FeatureCloud(reader, layer, prov, exclude_dead=exclude_dead)


__all__ = ["FILE_EXTENSIONS", "DECODER_NAMES", "ORIENTATIONS", "ArrayInfo", "SafetensorsRows", "RawBF16Rows",
           "TorchRows", "find_decoder_key", "decide_orientation", "open_decoder", "load_file_cloud"]
