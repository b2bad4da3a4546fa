"""Equality for result records that hold numpy arrays (dataclass ``==`` cannot compare arrays)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def same(a: Any, b: Any) -> bool:
    """Deep equality: arrays by value (NaN equal to NaN), NaN floats equal to NaN or None, tuples
    equal to lists, dataclasses field by field (fields with ``compare=False`` skipped)."""
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
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
                   if f.compare and not f.name.startswith("_"))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    nan_a = a is None or (isinstance(a, (float, np.floating)) and math.isnan(a))
    nan_b = b is None or (isinstance(b, (float, np.floating)) and math.isnan(b))
    if nan_a or nan_b:
        return nan_a and nan_b
    return bool(a == b)


def one_thread():
    """Context limiting BLAS to one thread: small decompositions (a few hundred rows) run 10-30x slower
    with two threads on a busy machine than with one."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def small_eigh(a: np.ndarray, eigvals_only: bool = False):
    """``scipy.linalg.eigh`` of a small symmetric matrix on one BLAS thread (ascending, like eigh)."""
    from scipy import linalg

    with one_thread():
        return linalg.eigh(a, eigvals_only=eigvals_only, check_finite=False)


class ArrayEq:
    """Mixin: ``==`` by :func:`same` (use with ``@dataclass(eq=False)``)."""

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return same(self, other)

    __hash__ = None  # mutable records


__all__ = ["same", "ArrayEq", "one_thread", "small_eigh"]
