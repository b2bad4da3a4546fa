"""Linear probes with control tasks, and the directions a causal check ablates.

* :func:`fit_probe` — a multinomial logistic probe (scikit-learn, L2, features standardised on the
  training tokens); test accuracy on held-out tokens.
* :func:`control_labels` — the Hewitt & Liang (2019) control task: every token type (token id) gets
  one random label, drawn from the task's label distribution, so a probe can only score above
  chance on it by memorising token identity.  Selectivity = accuracy - control accuracy.
* :func:`probe_directions` — the orthonormal directions (in the residual stream's own coordinates)
  that the probe reads: the span of ``coef / std``.  Mean-ablating them makes the probe's output
  constant; :func:`random_directions` gives the same number of random unit directions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from featuregeo.core.util import seed_sequence

__all__ = ["ProbeFit", "fit_probe", "control_labels", "probe_directions", "random_directions"]


@dataclass
class ProbeFit:
    """A fitted probe: test accuracy, chance (majority class), and the raw-space weights [C, d]."""

    accuracy: float
    chance: float
    weights: np.ndarray
    n_classes: int


def fit_probe(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, *, seed: int = 0,
              C: float = 1.0, max_iter: int = 300) -> ProbeFit:
    """Fit a logistic probe on ``(Xtr, ytr)`` and score it on ``(Xte, yte)``.

    Features are standardised with the training mean and standard deviation; the returned weights
    map raw features (``coef / std``), so ``X @ weights.T`` is the probe's logit up to a constant.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Xtr = np.asarray(Xtr, dtype=np.float64)
    Xte = np.asarray(Xte, dtype=np.float64)
    mu = Xtr.mean(0)
    sd = Xtr.std(0)
    sd[sd == 0] = 1.0
    classes, counts = np.unique(yte, return_counts=True)
    chance = float(counts.max() / counts.sum())
    if len(np.unique(ytr)) < 2:
        return ProbeFit(accuracy=float(np.mean(yte == ytr[0])), chance=chance,
                        weights=np.zeros((1, Xtr.shape[1])), n_classes=1)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((Xtr - mu) / sd, ytr)
    acc = float(np.mean(clf.predict((Xte - mu) / sd) == yte))
    return ProbeFit(accuracy=acc, chance=chance, weights=clf.coef_ / sd, n_classes=int(len(clf.classes_)))


def control_labels(token_ids: np.ndarray, labels: np.ndarray, *, seed: int, key: int = 0) -> np.ndarray:
    """One random label per token type, drawn from the empirical distribution of ``labels``.

    The same token id always gets the same control label (within one ``seed``/``key``), in training
    and test alike: pass the ids of both sets together and split afterwards.
    """
    token_ids = np.asarray(token_ids)
    labels = np.asarray(labels)
    vals, counts = np.unique(labels, return_counts=True)
    types, inv = np.unique(token_ids, return_inverse=True)
    rng = seed_sequence(seed, 7919, key)
    per_type = rng.choice(vals, size=len(types), p=counts / counts.sum())
    return per_type[inv]


def probe_directions(weights: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the probe's weight rows ([k, d], k = rank)."""
    W = np.asarray(weights, dtype=np.float64)
    W = W[np.linalg.norm(W, axis=1) > 0]
    if len(W) == 0:
        return np.zeros((0, weights.shape[1]))
    Q, Rm = np.linalg.qr(W.T)
    keep = np.abs(np.diag(Rm)) > 1e-10 * np.abs(np.diag(Rm)).max()
    return Q[:, keep].T


def random_directions(k: int, d: int, *, seed: int, key: int = 0, scale: np.ndarray | None = None) -> np.ndarray:
    """``k`` random orthonormal unit directions in ``d`` dimensions ([k, d]).

    With ``scale`` (the per-feature standard deviation a probe standardises by), the directions are
    drawn the way a probe's are made: Gaussian weights in standardised space mapped to raw space
    (``g / scale``), then orthonormalised — so they avoid the few massive dimensions exactly as much
    as probe directions do.
    """
    rng = seed_sequence(seed, 104729, key)
    G = rng.standard_normal((k, d))
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64).copy()
        s[s == 0] = 1.0
        G = G / s
    return probe_directions(G)
