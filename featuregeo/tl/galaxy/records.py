"""Equality for result records that hold numpy arrays (dataclass ``==`` cannot compare arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np

from featuregeo.core.util import deep_equal


same = deep_equal  # the shared array-aware equality (featuregeo.core.util)


def one_thread():
    """Context limiting BLAS to one thread: small decompositions (a few hundred rows) run 10-30x slower
    with two threads on a busy machine than with one."""
    from featuregeo.core.util import blas_one_thread

    return blas_one_thread()


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
