"""Synthetic sequences with a known tokenwise update and a known cross-token term (the planted check).

``h_i`` lies on a smooth ``latent``-dimensional manifold in ``R^d`` (tokens drawn independently);
the update is ``D_i = a(h_i) * h_i + C_i`` with a smooth gain ``a(h) = 1 + 0.5 tanh(B h)`` (a
tokenwise, diagonal map) and a cross-token term ``C_i = S G^T (h_{i-1} - mean h)`` that reads the
*previous* token of the same sequence and writes into a known ``cross_dim``-dimensional subspace ``S``
(zero at each sequence's first token).  Since ``h_{i-1}`` is independent of ``h_i``, no function of
``h_i`` predicts ``C_i``: an exact tokenwise split leaves ``R = C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PlantedUpdates", "planted_updates"]


@dataclass
class PlantedUpdates:
    """``h``, ``D`` [N, d]; ``groups`` [N] (sequence of each token); ``cross`` [N, d], the planted
    cross-token term (inside ``D``); ``subspace`` [d, cross_dim], its orthonormal basis."""

    h: np.ndarray
    D: np.ndarray
    groups: np.ndarray
    cross: np.ndarray
    subspace: np.ndarray


def planted_updates(n_seq: int = 64, seq_len: int = 32, d: int = 24, *, latent: int = 3, cross: float = 0.2,
                    cross_dim: int = 2, seed: int = 0) -> PlantedUpdates:
    """Draw the planted sequences.

    Parameters
    ----------
    n_seq, seq_len, d : int
    latent : int, default=3
        Intrinsic dimension of the token manifold.
    cross : float, default=0.2
        RMS of the cross-token term relative to the RMS of the tokenwise update (0 switches it off).
    cross_dim : int, default=2
    seed : int, default=0
    """
    rng = np.random.default_rng(seed)
    n = n_seq * seq_len
    z = rng.uniform(-1, 1, (n, latent))
    W1 = rng.standard_normal((latent, d))
    W2 = rng.standard_normal((latent, d)) * 1.5
    h = z @ W1 + 0.5 * np.sin(z @ W2) + rng.standard_normal(d)
    B = rng.standard_normal((d, d)) / np.sqrt(d) / h.std()
    tok = (1 + 0.5 * np.tanh(h @ B)) * h
    S = np.linalg.qr(rng.standard_normal((d, cross_dim)))[0]
    G = rng.standard_normal((d, cross_dim))
    groups = np.repeat(np.arange(n_seq), seq_len)
    prev = np.roll(h - h.mean(0), 1, axis=0)
    prev[::seq_len] = 0
    C = (prev @ G) @ S.T
    rms = np.sqrt((C * C).sum(1).mean())
    C = C * (cross * np.sqrt((tok * tok).sum(1).mean()) / rms) if rms > 0 else C
    return PlantedUpdates(h=h.astype(np.float32), D=(tok + C).astype(np.float32), groups=groups,
                          cross=C.astype(np.float32), subspace=S)
