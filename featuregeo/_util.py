"""Small shared helpers: atomic writes, JSON encoding, seeds, layer parsing."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError


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
