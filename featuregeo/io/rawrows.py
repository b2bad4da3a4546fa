"""Row readers that stream a 2-D tensor from a file with positioned reads (``os.pread``).

Memory-mapping a multi-GB decoder makes every page read count towards the process' resident
set; reading row blocks with ``pread`` into a fresh buffer keeps peak memory at one chunk.
Supports row-major tensors in ``.safetensors`` and ``.npy`` files (float16/bfloat16/float32/float64).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError

_ST_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": "bfloat16"}


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32 (bfloat16 is the top half of a float32)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


class PreadRows:
    """A RowReader over a row-major 2-D tensor at ``offset`` in ``path``.

    ``transpose=True`` serves a stored ``[d_model, n]`` tensor as rows ``[n, d_model]`` by reading
    column blocks (each read gathers the strided columns of the block)."""

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, int], dtype, transpose: bool = False):
        self.path = str(path)
        self.offset = int(offset)
        self._stored_shape = (int(shape[0]), int(shape[1]))
        self._bf16 = dtype == "bfloat16"
        self._dtype = np.dtype(np.uint16) if self._bf16 else np.dtype(dtype)
        self.dtype = np.dtype(np.float32) if self._bf16 else self._dtype
        self._t = transpose
        self.shape = (self._stored_shape[1], self._stored_shape[0]) if transpose else self._stored_shape
        self.stored_dtype = "bfloat16" if self._bf16 else self._dtype.name
        size = os.path.getsize(self.path)
        need = self.offset + self._stored_shape[0] * self._stored_shape[1] * self._dtype.itemsize
        if size < need:
            raise InputError(f"{self.path}: file is truncated ({size} bytes, the tensor needs {need}); "
                             "expected a complete file")

    def _read_stored_rows(self, start: int, stop: int) -> np.ndarray:
        ncol = self._stored_shape[1]
        nbytes = (stop - start) * ncol * self._dtype.itemsize
        buf = bytearray(nbytes)
        view = memoryview(buf)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos, got = self.offset + start * ncol * self._dtype.itemsize, 0
            while got < nbytes:
                n = os.preadv(fd, [view[got:]], pos + got)
                if n <= 0:
                    raise InputError(f"{self.path}: unexpected end of file; expected a complete tensor")
                got += n
            try:  # keep the page cache from growing with a file read once
                os.posix_fadvise(fd, pos, nbytes, os.POSIX_FADV_DONTNEED)
            except (AttributeError, OSError):
                pass
        finally:
            os.close(fd)
        a = np.frombuffer(buf, dtype=self._dtype).reshape(stop - start, ncol)
        return _bf16_to_f32(a) if self._bf16 else a

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self._t:
            return self._read_stored_rows(start, stop)
        # transposed storage: gather columns [start, stop) from every stored row, in row blocks
        d = self._stored_shape[0]
        out = np.empty((stop - start, d), dtype=np.float32 if self._bf16 else self._dtype)
        block = max(1, (64 << 20) // max(1, self._stored_shape[1] * self._dtype.itemsize))
        for s in range(0, d, block):
            e = min(d, s + block)
            out[:, s:e] = self._read_stored_rows(s, e)[:, start:stop].T
        return out


def safetensors_header(path: str | Path) -> tuple[dict, int]:
    """(header dict, byte offset of the data section) of a safetensors file; InputError if corrupt."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("shorter than 8 bytes")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000 or n > p.stat().st_size:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise InputError(f"{p}: not a valid safetensors file ({e}); expected a safetensors header") from None
    return header, 8 + n


def safetensors_rows(path: str | Path, key: str, transpose: bool = False) -> PreadRows:
    """Stream the 2-D tensor ``key`` of a safetensors file."""
    header, data_start = safetensors_header(path)
    if key not in header:
        raise InputError(f"{path}: no tensor {key!r}; expected one of {sorted(k for k in header if k != '__metadata__')}")
    info = header[key]
    if len(info["shape"]) != 2:
        raise InputError(f"{path}: tensor {key!r} has shape {info['shape']}; expected a 2-D decoder")
    if info["dtype"] not in _ST_DTYPES:
        raise InputError(f"{path}: tensor {key!r} has dtype {info['dtype']}; expected F16, BF16, F32 or F64")
    return PreadRows(path, data_start + info["data_offsets"][0], tuple(info["shape"]), _ST_DTYPES[info["dtype"]],
                     transpose=transpose)


def npy_rows(path: str | Path, transpose: bool = False) -> PreadRows:
    """Stream a 2-D C-ordered .npy array (never unpickles)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=100000)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=100000)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = fh.tell()
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: not a valid .npy file ({e}); expected a NumPy array file") from None
    if dtype.hasobject:
        raise InputError(f"{p}: holds Python objects (needs unpickling); expected a numeric array")
    if len(shape) != 2:
        raise InputError(f"{p}: array has shape {shape}; expected a 2-D decoder [n_features, d_model]")
    if fortran:  # Fortran order = the transpose stored row-major
        return PreadRows(p, offset, (shape[1], shape[0]), dtype, transpose=not transpose)
    return PreadRows(p, offset, shape, dtype, transpose=transpose)
