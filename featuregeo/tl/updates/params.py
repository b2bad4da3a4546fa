"""Parameters of the layer-update analysis (:class:`UpdatesParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featuregeo.core.errors import InputError
from featuregeo.core.results import Params, check_choice, check_float, check_int

__all__ = ["UpdatesParams", "CLASSES", "LOCAL_CLASSES", "METRICS", "FAST"]

CLASSES = ("diag", "lowrank", "global")
LOCAL_CLASSES = ("diag", "lowrank")
METRICS = ("cosine", "euclidean")
FAST = {"n_rows": 16, "seq_len": 48, "k": 16, "rank": 4, "k_grid": (8, 16), "rank_grid": (2, 4), "kl_positions": 2,
        "n_boot": 200}


def _as_tuple(v: Any) -> Any:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list):
        return tuple(v)
    return v


def _ints(name: str, v: Any, minimum: int, allow_empty: bool = False) -> None:
    if not isinstance(v, tuple) or (not v and not allow_empty):
        raise InputError(f"{name}: expected a tuple of integers >= {minimum}. Got {v!r} instead.")
    for x in v:
        check_int(name, x, minimum=minimum)


@dataclass(frozen=True)
class UpdatesParams(Params):
    """Every choice of the layer-update analysis (stored in :class:`UpdatesResult`).

    Parameters
    ----------
    layers : tuple of int or None, default=None
        Transitions ``l -> l + 1`` to analyse, ``l`` in ``0 .. n_layers - 2`` (``h_l`` is the output
        of block ``l``, so transition ``l`` is the update written by block ``l + 1``).  None = all.
    n_rows : int, default=64
        Held-out text rows (one per document, genres interleaved); >= 4.
    seq_len : int, default=128
        Tokens per row after BOS; the analysis uses ``n_rows * seq_len`` tokens (BOS dropped).
    k : int, default=32
        Neighbours per token for the local fits (nearest in representation space, from other rows).
    rank : int, default=8
        Rank of the local low-rank map (reduced-rank ridge regression).
    ridge : float, default=0.01
        Ridge strength, relative to the mean energy of the neighbours' inputs (scale-free).
    metric : {"cosine", "euclidean"}, default="cosine"
        Neighbour metric; ``cosine`` compares ``h`` after subtracting the mean over tokens.
    classes : tuple of str, default=("diag", "lowrank", "global")
        Tokenwise classes fitted (``global`` = one affine map for all tokens, cross-fitted by row halves).
    primary : str, default="lowrank"
        The class used for the controls (attention / MLP / shuffled neighbours); a local class in ``classes``.
    kl_classes : tuple of str, default=("diag", "lowrank")
        Classes whose tokenwise part is patched in to measure the output KL (may be empty).
    k_grid, rank_grid : tuple of int
        Sensitivity: the local fits are repeated for each ``k`` (at ``rank``) and each rank (at ``k``).
    energy : float, default=0.9
        The dominant tokenwise subspace holds this fraction of the tokenwise part's energy.
    kl_positions : int, default=4
        Patched positions per row and transition (the same positions for every transition; seeded).
    n_boot : int, default=1000
        Bootstrap resamples (over rows) for the Spearman intervals.
    batch_size : int, default=8
        Rows per forward pass when reading activations.
    seed : int, default=0
        Seeds the held-out split, the shuffled neighbours, the patched positions and the bootstrap.
    """

    layers: tuple[int, ...] | None = None
    n_rows: int = 64
    seq_len: int = 128
    k: int = 32
    rank: int = 8
    ridge: float = 0.01
    metric: str = "cosine"
    classes: tuple[str, ...] = CLASSES
    primary: str = "lowrank"
    kl_classes: tuple[str, ...] = LOCAL_CLASSES
    k_grid: tuple[int, ...] = (8, 16, 32, 64)
    rank_grid: tuple[int, ...] = (1, 2, 4, 8, 16)
    energy: float = 0.9
    kl_positions: int = 4
    n_boot: int = 1000
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("layers", "classes", "kl_classes", "k_grid", "rank_grid"):
            v = _as_tuple(getattr(self, name))
            if name in ("layers", "k_grid", "rank_grid") and isinstance(v, tuple):
                try:
                    v = tuple(sorted({int(x) for x in v})) if all(not isinstance(x, bool) for x in v) else v
                except (TypeError, ValueError):
                    pass
            object.__setattr__(self, name, v)

    @classmethod
    def fast(cls, **changes: Any) -> "UpdatesParams":
        """Small settings (16 rows of 48 tokens, k 16, rank 4, short grids); ``changes`` override any field."""
        return cls(**{**FAST, **changes})

    @property
    def n_tokens(self) -> int:
        return self.n_rows * self.seq_len

    def validate(self) -> "UpdatesParams":
        """Check every field; one-line InputError naming the parameter. Returns ``self``."""
        if self.layers is not None:
            _ints("layers", self.layers, 0)
        check_int("n_rows", self.n_rows, minimum=4)
        check_int("seq_len", self.seq_len, minimum=4)
        check_int("k", self.k, minimum=2)
        check_int("rank", self.rank, minimum=1)
        check_float("ridge", self.ridge, low=0.0, low_open=True)
        check_choice("metric", self.metric, METRICS)
        c = self.classes
        if not isinstance(c, tuple) or not c or any(x not in CLASSES for x in c) or len(set(c)) != len(c):
            raise InputError(f"classes: expected one or more of {', '.join(CLASSES)}. Got {c!r} instead.")
        local = [x for x in c if x in LOCAL_CLASSES]
        if self.primary not in local:
            raise InputError(f"primary: expected a local class among classes ({', '.join(local) or 'none'}). "
                             f"Got {self.primary!r} instead.")
        kc = self.kl_classes
        if not isinstance(kc, tuple) or any(x not in c for x in kc):
            raise InputError(f"kl_classes: expected classes among {', '.join(c)}. Got {kc!r} instead.")
        _ints("k_grid", self.k_grid, 2, allow_empty=True)
        _ints("rank_grid", self.rank_grid, 1, allow_empty=True)
        check_float("energy", self.energy, low=0.0, high=1.0, low_open=True)
        check_int("kl_positions", self.kl_positions, minimum=0, maximum=self.seq_len)
        check_int("n_boot", self.n_boot, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("seed", self.seed, minimum=0)
        need = max((self.k,) + tuple(self.k_grid))
        if (self.n_rows - 1) * self.seq_len < need:
            raise InputError(f"k: expected at most {(self.n_rows - 1) * self.seq_len} neighbours (tokens of the other "
                             f"rows). Got {need} instead.")
        return self

    def unit_dict(self) -> dict:
        """The fields that determine one transition's numbers (not ``layers`` or ``batch_size``)."""
        d = self.to_dict()
        d.pop("layers", None)
        d.pop("batch_size", None)
        return d
