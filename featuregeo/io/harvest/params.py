"""The parameters of a harvest and the error raised when one cannot continue."""

from __future__ import annotations

from dataclasses import dataclass

from featuregeo.core.errors import FeaturegeoError, InputError
from featuregeo.core.results import Params, check_bool, check_float, check_int


class HarvestError(FeaturegeoError):
    """A harvest could not continue (e.g. the disk is full); finished shards are intact."""


@dataclass(frozen=True)
class HarvestParams(Params):
    """What a harvest does, apart from its inputs (model, corpus, SAEs).

    Parameters
    ----------
    block_len : int, default=256
        Text tokens per block (each block is read as a fresh sequence after a BOS token).
    threshold : float, default=1.0
        A feature fires in a block when its activation exceeds this on any token (the paper's rule).
    batch_size : int, default=16
        Blocks per forward pass.
    shard_blocks : int, default=64
        Blocks per shard, the unit of resumption; a multiple of ``batch_size``.
    max_blocks : int or None, default=None
        Stop after this many blocks (None: the whole corpus).
    max_blocks_per_doc : int or None, default=None
        Take at most this many blocks from each document.
    store_activations : bool, default=False
        Also store the residual activations (float16, scaled per layer) of every harvested layer.
    layers : tuple of int or None, default=None
        Layers whose residual stream is read in addition to the SAE layers (for
        ``store_activations`` without SAEs).
    dashboards : bool, default=True
        Also collect feature dashboards in the same forward pass (:mod:`featuregeo.io.harvest.dashboards`):
        every feature's top activating contexts, activation histogram and firing density, and the
        logit effects of its decoder direction.
    dashboard_k : int, default=10
        Top activating contexts kept per feature (at most one per block).
    dashboard_window : int, default=24
        Tokens per context: the top token with ``window - 1 - (window - 1) // 4`` tokens before it
        and ``(window - 1) // 4`` after it (clipped at the block's edges).
    dashboard_logits : int, default=10
        Promoted and suppressed output tokens kept per feature.

    Examples
    --------
    >>> HarvestParams(block_len=64, max_blocks=128).validate().shard_blocks
    64
    """

    block_len: int = 256
    threshold: float = 1.0
    batch_size: int = 16
    shard_blocks: int = 64
    max_blocks: int | None = None
    max_blocks_per_doc: int | None = None
    store_activations: bool = False
    layers: tuple[int, ...] | None = None
    dashboards: bool = True
    dashboard_k: int = 10
    dashboard_window: int = 24
    dashboard_logits: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):  # lists are accepted and stored as tuples (hashable, comparable)
            object.__setattr__(self, "layers", tuple(self.layers))

    def validate(self) -> "HarvestParams":
        check_int("block_len", self.block_len, minimum=1)
        check_float("threshold", self.threshold, low=0.0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("shard_blocks", self.shard_blocks, minimum=1)
        if self.shard_blocks % self.batch_size:
            raise InputError(f"shard_blocks: expected a multiple of batch_size ({self.batch_size}) so batches never "
                             f"straddle shards. Got {self.shard_blocks} instead.")
        check_int("max_blocks", self.max_blocks, minimum=1, allow_none=True)
        check_int("max_blocks_per_doc", self.max_blocks_per_doc, minimum=1, allow_none=True)
        if not isinstance(self.store_activations, bool):
            raise InputError(f"store_activations: expected True or False. Got {self.store_activations!r} instead.")
        check_bool("dashboards", self.dashboards)
        check_int("dashboard_k", self.dashboard_k, minimum=1, maximum=1000)
        check_int("dashboard_window", self.dashboard_window, minimum=1, maximum=4096)
        check_int("dashboard_logits", self.dashboard_logits, minimum=1, maximum=1000)
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
                raise InputError(f"layers: expected a tuple of layer numbers or None. Got {self.layers!r} instead.")
            for x in self.layers:
                check_int("layers", x, minimum=0)
        return self
