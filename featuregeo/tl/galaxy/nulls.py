"""Null clouds: isotropic Gaussian rows of a given shape, generated on demand (never materialised)."""

from __future__ import annotations

import numpy as np

from featuregeo.core.data import FeatureCloud, Provenance


class GaussianRows:
    """A :class:`~featuregeo.core.data.RowReader` of i.i.d. N(0, 1) float32 rows, generated from a seed.

    Rows are produced in fixed blocks, each from its own child seed, so any range reads the same
    values whatever the chunking, and the full matrix never has to exist.

    Parameters
    ----------
    n, d : int
        Shape.
    seed : int, default=0
        Non-negative.
    scales : ndarray of shape (d,), optional
        Per-column standard deviations.

    Examples
    --------
    >>> g = GaussianRows(10, 3, seed=1)
    >>> bool(np.array_equal(g.read(2, 5), g.read(0, 10)[2:5]))
    True
    """

    block = 4096

    def __init__(self, n: int, d: int, seed: int = 0, scales: np.ndarray | None = None):
        self.shape = (int(n), int(d))
        self.dtype = np.dtype(np.float32)
        self._seed = int(seed)
        self._scales = None if scales is None else np.asarray(scales, dtype=np.float32)

    def _block(self, i: int) -> np.ndarray:
        rows = min(self.block, self.shape[0] - i * self.block)
        rng = np.random.default_rng([self._seed, i])
        x = rng.standard_normal((rows, self.shape[1]), dtype=np.float32)
        if self._scales is not None:
            x *= self._scales
        return x

    def read(self, start: int, stop: int) -> np.ndarray:
        b0, b1 = start // self.block, (stop - 1) // self.block
        parts = [self._block(i) for i in range(b0, b1 + 1)]
        x = np.concatenate(parts) if len(parts) > 1 else parts[0]
        off = start - b0 * self.block
        return x[off:off + (stop - start)]


def isotropic_null_cloud(n: int, d: int, seed: int = 0) -> FeatureCloud:
    """An isotropic Gaussian cloud of shape (n, d), streamed (never materialised).

    Examples
    --------
    >>> isotropic_null_cloud(100, 8, seed=3).n_total
    100
    """
    return FeatureCloud(GaussianRows(n, d, seed), None,
                        Provenance(source=f"isotropic-gaussian(n={n},d={d},seed={seed})"))


__all__ = ["GaussianRows", "isotropic_null_cloud"]
