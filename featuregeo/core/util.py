"""Small shared helpers: atomic writes, JSON encoding, fingerprints, seeds, layer parsing, row norms."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from featuregeo.core.errors import InputError


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and NaN into JSON-friendly Python objects."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def resolve_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A Generator from a seed or an existing Generator (None means seed 0: runs are reproducible)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        seed = 0
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer or numpy Generator. Got {seed!r} instead.")
    return np.random.default_rng(int(seed))


def parse_layers(spec: str | Iterable[int] | None) -> list[int] | None:
    """Parse a layer selection such as ``"0,4,8"``, ``"0-25"``, ``"0-25:2"`` or ``"all"``.

    Returns None for ``None``/``"all"`` (meaning every available layer).
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        out = [int(x) for x in spec]
        for x in out:
            if x < 0:
                raise InputError(f"--layers: layers must be non-negative integers. Got {x} instead.")
        return out
    s = spec.strip()
    if s in ("", "all"):
        return None
    layers: list[int] = []
    try:
        for part in s.split(","):
            part = part.strip()
            if not part:
                continue
            step = 1
            if ":" in part:
                part, step_s = part.split(":", 1)
                step = int(step_s)
                if step <= 0:
                    raise ValueError
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo or lo < 0:
                    raise ValueError
                layers.extend(range(lo, hi + 1, step))
            else:
                v = int(part)
                if v < 0:
                    raise ValueError
                layers.append(v)
    except ValueError:
        raise InputError(
            f"--layers: expected a list like '0,4,8', a range like '0-25' or '0-25:2', or 'all'. Got {spec!r} instead."
        ) from None
    return sorted(dict.fromkeys(layers))


def unit_rows(x: np.ndarray, *, dtype=np.float32) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (a new array).  Zero rows stay zero (never NaN)."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def fingerprint(*parts: Any) -> str:
    """A short stable hash (hex) of JSON-able parts; numpy arrays are hashed by dtype, shape and bytes."""
    h = hashlib.blake2b(digest_size=16)

    def feed(obj: Any) -> None:
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            h.update(f"<nd {a.dtype.str} {a.shape}>".encode())
            h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
        elif isinstance(obj, dict):
            h.update(b"{")
            for k in sorted(obj, key=str):
                feed(str(k))
                feed(obj[k])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(to_jsonable(obj), sort_keys=True).encode())
            h.update(b";")

    for p in parts:
        feed(p)
    return h.hexdigest()


_SAMPLE = 1 << 20  # bytes hashed at each end of a large file


def file_fingerprint(path: str | os.PathLike) -> str:
    """Identity and content of a file or directory: path, size, mtime, and a hash of the bytes.

    Files up to 64 MiB are hashed whole; larger ones by their first and last MiB plus size and
    modification time, so an edit in place changes the fingerprint while a 5 GB decoder is not re-read.
    Directories combine the fingerprints of their files (sorted by relative path).
    """
    p = Path(path)
    if p.is_dir():
        return fingerprint("dir", [(str(f.relative_to(p)), file_fingerprint(f))
                                  for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(".")])
    st = p.stat()
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as fh:
        if st.st_size <= 64 * _SAMPLE:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        else:
            h.update(fh.read(_SAMPLE))
            fh.seek(st.st_size - _SAMPLE)
            h.update(fh.read(_SAMPLE))
            h.update(str(st.st_mtime_ns).encode())
    return fingerprint("file", str(p.resolve()), st.st_size, h.hexdigest())


def seed_sequence(seed: int, *keys: int) -> np.random.Generator:
    """A Generator for a sub-stream ``keys`` of ``seed`` (all non-negative; any layer number works)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer. Got {seed!r} instead.")
    return np.random.default_rng([int(seed), *(int(k) % (2**63) for k in keys)])


def say(progress, msg: str) -> None:
    """Send ``msg`` to a progress callback, if any."""
    if progress is not None:
        progress(msg)


def check_output_path(out: str | os.PathLike, name: str = "--out", what: str = "a directory") -> Path:
    """``out`` as a path where an output directory can be (or is), creating nothing.

    Raises a one-line :class:`InputError` when ``out`` or one of its parents is a file.
    """
    out = Path(out)
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{name} {out}: expected {what}; {p} is a file")
            break
    return out


def deep_equal(a: Any, b: Any) -> bool:
    """Deep equality for results holding numpy arrays (dataclass ``==`` cannot compare arrays):
    arrays by value (NaN equal to NaN), NaN floats equal to NaN or None, tuples equal to lists,
    dataclasses field by field (fields with ``compare=False`` or a leading underscore skipped)."""
    import dataclasses
    import math

    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if a is None or b is None:
            return False
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        if type(a) is not type(b):
            return False
        return all(deep_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
                   if f.compare and not f.name.startswith("_"))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    nan_a = a is None or (isinstance(a, (float, np.floating)) and math.isnan(a))
    nan_b = b is None or (isinstance(b, (float, np.floating)) and math.isnan(b))
    if nan_a or nan_b:
        return nan_a and nan_b
    return bool(a == b)


_CONTROLLER: list = []


def blas_one_thread(user_api: str | None = None):
    """A context running BLAS/LAPACK (and, with ``user_api=None``, OpenMP) on one thread.

    Same effect as ``threadpoolctl.threadpool_limits(1, user_api)``, but the loaded thread-pool
    libraries are looked up once per process (``threadpool_limits`` scans every loaded shared library
    on each call: ~3.5 ms, more than the small ``eigh`` it often wraps).  The scan is redone when
    modules were imported since the last one (native libraries arrive with imports)."""
    import sys

    from threadpoolctl import ThreadpoolController

    n_mods = len(sys.modules)
    if not _CONTROLLER or _CONTROLLER[0][0] != n_mods:
        _CONTROLLER[:] = [(n_mods, ThreadpoolController())]
    return _CONTROLLER[0][1].limit(limits=1, user_api=user_api)
