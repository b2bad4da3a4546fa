"""Parameters of the layer comparison (:class:`LayersParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, check_float, check_int
from featuregeo.tl.layers.matching import DEFAULT_THRESHOLDS
from featuregeo.tl.layers.similarity import MEASURES

__all__ = ["LayersParams", "FAST"]

FAST = {"n_blocks": 16, "block_len": 48, "loss_blocks": 4, "loss_block_len": 64, "prune_max": 2,
        "random_drops": 2, "null_assignment": False}


def _as_tuple(v: Any) -> Any:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list):
        return tuple(v)
    return v


@dataclass(frozen=True)
class LayersParams(Params):
    """Every tuning parameter of the layer comparison (stored in :class:`LayersResult`).

    Parameters
    ----------
    measures : tuple of str, default=("cosine", "cka", "uas", "ted")
        Similarity measures (a comma string or list is accepted and stored as a de-duplicated tuple).
    n_blocks : int, default=32
        Held-out text blocks (sentences) for the similarity measures; >= 2.
    block_len : int, default=64
        Tokens per similarity block (BOS not counted); >= 4.
    loss_blocks : int, default=32
        Held-out blocks, from other documents, for the pruning loss.
    loss_block_len : int, default=128
        Tokens per loss block; >= 2.
    prune_max : int, default=3
        Drop up to this many blocks (0 = no pruning check); must be below the model's block count.
    random_drops : int, default=5
        Seeded random drop orders to compare with.
    thresholds : tuple of float, default=(0.3, 0.5, 0.7, 0.9)
        Cosine thresholds of the SAE matching table, increasing, in [-1, 1].
    null_assignment : bool, default=True
        Solve the one-to-one assignment under the rotation null too (slow for big SAEs).
    seed : int, default=0
        Seeds the held-out split, the random drop orders and the rotation null.

    Examples
    --------
    >>> LayersParams.fast(prune_max=1).prune_max
    1
    >>> LayersParams(measures="cka,cosine").measures
    ('cka', 'cosine')
    """

    measures: tuple[str, ...] = MEASURES
    n_blocks: int = 32
    block_len: int = 64
    loss_blocks: int = 32
    loss_block_len: int = 128
    prune_max: int = 3
    random_drops: int = 5
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    null_assignment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        m = _as_tuple(self.measures)
        if isinstance(m, tuple) and all(isinstance(x, str) for x in m):
            m = tuple(dict.fromkeys(m))  # "cka,cka" means "cka"
        object.__setattr__(self, "measures", m)
        object.__setattr__(self, "thresholds", _as_tuple(self.thresholds))

    @classmethod
    def fast(cls, **changes: Any) -> "LayersParams":
        """Small settings: 16 blocks of 48 tokens (768 tokens: more than d_model 640, see the CKA baseline), 4 loss blocks of 64, prune-max 2, 2 random drops,
        no assignment under the null; ``changes`` override any field."""
        return cls(**{**FAST, **changes})

    def validate(self) -> "LayersParams":
        """Check every field; one-line InputError naming the parameter. Returns ``self``."""
        m = self.measures
        if not isinstance(m, tuple) or not m or any(x not in MEASURES for x in m) or len(set(m)) != len(m):
            raise InputError(f"measures: expected one or more of {', '.join(MEASURES)}. Got {m!r} instead.")
        check_int("n_blocks", self.n_blocks, minimum=2)
        check_int("block_len", self.block_len, minimum=4)
        check_int("loss_blocks", self.loss_blocks, minimum=1)
        check_int("loss_block_len", self.loss_block_len, minimum=2)
        check_int("prune_max", self.prune_max, minimum=0)
        check_int("random_drops", self.random_drops, minimum=0)
        th = self.thresholds
        if not isinstance(th, tuple) or not th:
            raise InputError(f"thresholds: expected increasing cosines in [-1, 1]. Got {th!r} instead.")
        for t in th:
            check_float("thresholds", t, low=-1.0, high=1.0)
        if any(b <= a for a, b in zip(th, th[1:])):
            raise InputError(f"thresholds: expected increasing cosines in [-1, 1]. Got {th!r} instead.")
        if not isinstance(self.null_assignment, bool):
            raise InputError(f"null_assignment: expected True or False. Got {self.null_assignment!r} instead.")
        check_int("seed", self.seed, minimum=0)
        return self
