"""The records of a lens analysis (:class:`LensResult` and the per-layer :class:`LensLayer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregeo.core.util import deep_equal

from featuregeo.core.results import Result
from featuregeo.tl.lens.params import LensParams

__all__ = ["same", "Interval", "LensScores", "ProbeScore", "CausalCheck", "LensLayer", "Trajectory", "LensResult"]


def _empty() -> np.ndarray:
    return np.zeros((0,), dtype=np.float32)


same = deep_equal  # the shared array-aware equality (featuregeo.core.util)


class _ArrayEq:
    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return same(self, other)

    __hash__ = None


@dataclass(eq=False)
class Interval(_ArrayEq):
    """A mean with its block-bootstrap 95 % interval."""

    mean: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")


@dataclass(eq=False)
class LensScores(_ArrayEq):
    """One lens at one layer on held-out tokens (full vocabulary).

    Attributes
    ----------
    ce : Interval, nats/token — cross-entropy against the next token.
    kl : Interval, nats/token — KL(final || lens).
    entropy : Interval, nats — entropy of the lens distribution.
    top1 : Interval, fraction — lens top token == final top token.
    """

    ce: Interval = field(default_factory=Interval)
    kl: Interval = field(default_factory=Interval)
    entropy: Interval = field(default_factory=Interval)
    top1: Interval = field(default_factory=Interval)


@dataclass(eq=False)
class ProbeScore(_ArrayEq):
    """A logistic probe and its control task at one layer.

    Attributes
    ----------
    task : str — ``"genre"`` (document genre) or ``"pycat"`` (Python token category, code documents).
    accuracy : float — held-out accuracy.
    control : float — held-out accuracy on the control task (random label per token type).
    selectivity : float — ``accuracy - control``.
    chance : float — majority-class rate of the held-out labels.
    n_classes, n_train, n_test : int
    """

    task: str = ""
    accuracy: float = float("nan")
    control: float = float("nan")
    selectivity: float = float("nan")
    chance: float = float("nan")
    n_classes: int = 0
    n_train: int = 0
    n_test: int = 0


@dataclass(eq=False)
class CausalCheck(_ArrayEq):
    """Held-out loss after mean-ablating a probe's directions at one layer, against random directions.

    Attributes
    ----------
    task : str
    n_dirs : int — directions ablated (the probe's weight rank).
    ablated : float, nats/token — loss with the probe directions mean-ablated.
    delta : float, nats/token — ``ablated - baseline``.
    random_deltas : list of float — the same for random unit directions (same count).
    random_mean, random_std : float
    ratio : float — ``delta / random_mean`` (NaN when the random mean is ~0).
    """

    task: str = ""
    n_dirs: int = 0
    ablated: float = float("nan")
    delta: float = float("nan")
    random_deltas: list[float] = field(default_factory=list)
    random_mean: float = float("nan")
    random_std: float = float("nan")
    ratio: float = float("nan")


@dataclass(eq=False)
class LensLayer(_ArrayEq, Result):
    """Everything measured at one layer (the output of block ``layer``).

    Attributes
    ----------
    layer : int
    logit, tuned : LensScores — the logit lens and the tuned lens (equal at the last layer).
    train_kl_start, train_kl_end : float, nats — tuned-lens training loss (KL on the training
        vocabulary) over the first and last 10 % of steps (NaN when not trained here).
    probes : list of ProbeScore
    causal : list of CausalCheck
    """

    kind = "lens_layer"
    layer: int = 0
    logit: LensScores = field(default_factory=LensScores)
    tuned: LensScores = field(default_factory=LensScores)
    train_kl_start: float = float("nan")
    train_kl_end: float = float("nan")
    probes: list[ProbeScore] = field(default_factory=list)
    causal: list[CausalCheck] = field(default_factory=list)


@dataclass(eq=False)
class Trajectory(_ArrayEq):
    """Top token per layer and position for one sentence, under both lenses.

    Attributes
    ----------
    tokens : list of str — the sentence's tokens (BOS dropped).
    layers : list of int
    logit_top, tuned_top : list of list of str — [layer][position] top token.
    logit_prob, tuned_prob : ndarray [n_layers, n_positions] — its probability.
    """

    tokens: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    logit_top: list[list[str]] = field(default_factory=list)
    tuned_top: list[list[str]] = field(default_factory=list)
    logit_prob: np.ndarray = field(default_factory=_empty)
    tuned_prob: np.ndarray = field(default_factory=_empty)


@dataclass(eq=False)
class LensResult(_ArrayEq, Result):
    """Logit lens, tuned lens and probes of one model (``lens.json`` + ``lens.npz`` + ``lens.csv``).

    Attributes
    ----------
    params : LensParams
    model : str
    n_layers, d_model, vocab : int
    softcap : float or None — the final logit soft-cap applied by both lenses.
    subset_size : int — training vocabulary (0 = full).
    subset_mass : float — mean final-distribution mass inside the training subset on held-out tokens.
    n_train_tokens, n_eval_tokens, n_eval_docs : int
    baseline_loss : float, nats/token — held-out loss of the causal-check rows, nothing ablated.
    layers : list of LensLayer
    trajectory : Trajectory or None
    train_loss : ndarray [n_trained_layers, steps] — per-step training KL (rows in ``trained_layers`` order).
    trained_layers : list of int
    timings : dict — seconds per stage (not compared).
    """

    kind = "lens"
    params: LensParams = field(default_factory=LensParams)
    model: str = ""
    n_layers: int = 0
    d_model: int = 0
    vocab: int = 0
    softcap: float | None = None
    subset_size: int = 0
    subset_mass: float = float("nan")
    n_train_tokens: int = 0
    n_eval_tokens: int = 0
    n_eval_docs: int = 0
    baseline_loss: float = float("nan")
    layers: list[LensLayer] = field(default_factory=list)
    trajectory: Trajectory | None = None
    train_loss: np.ndarray = field(default_factory=_empty)
    trained_layers: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    _lens: Any = field(default=None, repr=False, compare=False)

    @property
    def tuned_lens(self):
        """The :class:`~featuregeo.tl.lens.tuned.TunedLens` used (only on a freshly computed result)."""
        return self._lens

    def layer(self, L: int) -> LensLayer:
        for rec in self.layers:
            if rec.layer == L:
                return rec
        raise KeyError(L)

    def rows(self) -> list[dict[str, Any]]:
        """One record per layer and lens: the four metrics with their intervals."""
        out = []
        for rec in self.layers:
            for name in ("logit", "tuned"):
                s = getattr(rec, name)
                row: dict[str, Any] = {"layer": rec.layer, "lens": name}
                for m in ("ce", "kl", "entropy", "top1"):
                    iv = getattr(s, m)
                    row[m], row[f"{m}_low"], row[f"{m}_high"] = iv.mean, iv.low, iv.high
                out.append(row)
        return out

    def probe_rows(self) -> list[dict[str, Any]]:
        """One record per layer and probe task (with the causal check when it was run)."""
        out = []
        for rec in self.layers:
            causal = {c.task: c for c in rec.causal}
            for p in rec.probes:
                row = {"layer": rec.layer, "task": p.task, "accuracy": p.accuracy, "control": p.control,
                       "selectivity": p.selectivity, "chance": p.chance}
                c = causal.get(p.task)
                if c is not None:
                    row.update(ablate_delta=c.delta, random_delta=c.random_mean, random_std=c.random_std)
                out.append(row)
        return out
