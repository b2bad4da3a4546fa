"""The pruning check: does a similarity measure find the blocks that can be dropped?

For each redundancy ranking, drop the ``n`` most redundant blocks (``n = 1 .. prune_max``) and
measure the held-out next-token loss (:func:`featuregeo.io.hooks.heldout_loss`: the dropped blocks
pass their input through); compare with seeded random drop orders.  Each distinct set of dropped
blocks is evaluated once and, with a checkpoint, stored as its own unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from featuregeo.core.checkpoint import Checkpoint
from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.core.util import fingerprint, say, seed_sequence
from featuregeo.io.hooks import HeldoutLoss, heldout_loss

__all__ = ["PruningRow", "RandomDropSummary", "PruningCheck", "random_orders", "pruning_check"]


@dataclass
class PruningRow(Result):
    """Loss after dropping ``n_drop`` blocks chosen by one method.

    Attributes
    ----------
    method : str
        A measure (blocks ranked by its redundancy) or ``"random"``.
    n_drop : int
    dropped : list of int
        The blocks skipped (sorted).
    loss : float
        Held-out next-token loss, nats/token.
    delta : float
        ``loss - baseline``.
    seed : int or None
        Index of the random order (``"random"`` rows only).
    """

    kind = "pruning_row"
    method: str = ""
    n_drop: int = 0
    dropped: list[int] = field(default_factory=list)
    loss: float = float("nan")
    delta: float = float("nan")
    seed: int | None = None


@dataclass
class RandomDropSummary(Result):
    """Random drops of ``n_drop`` blocks summarised: mean and sample std of the loss over ``n`` orders."""

    kind = "random_drop_summary"
    n_drop: int = 0
    mean: float | None = None
    std: float | None = None
    n: int = 0


@dataclass
class PruningCheck(Result):
    """The pruning table.

    Attributes
    ----------
    baseline : float
        Loss with nothing dropped, nats/token.
    n_tokens : int
        Predicted positions per evaluation.
    prune_max : int
    n_blocks : int
        Decoder blocks of the model.
    table : list of PruningRow
        One row per (measure, n_drop).
    random : list of PruningRow
        One row per (random order, n_drop).
    random_summary : list of RandomDropSummary
        One per n_drop.
    """

    kind = "pruning_check"
    baseline: float = float("nan")
    n_tokens: int = 0
    prune_max: int = 0
    n_blocks: int = 0
    table: list[PruningRow] = field(default_factory=list)
    random: list[PruningRow] = field(default_factory=list)
    random_summary: list[RandomDropSummary] = field(default_factory=list)

    def summary(self, n_drop: int) -> RandomDropSummary | None:
        """The random-drop summary for ``n_drop`` blocks (None if absent)."""
        return next((s for s in self.random_summary if s.n_drop == n_drop), None)


def random_orders(n_blocks: int, count: int, seed: int) -> list[list[int]]:
    """``count`` seeded random permutations of the blocks (order ``s`` from ``seed_sequence(seed, 7, s)``)."""
    return [seed_sequence(seed, 7, s).permutation(n_blocks).tolist() for s in range(count)]


def pruning_check(loaded, rows: np.ndarray, rankings: Mapping[str, Sequence[int]], *, prune_max: int = 3,
                  random_drops: int = 5, seed: int = 0, checkpoint: Checkpoint | None = None, model_fp: str = "",
                  batch_size: int = 4, progress: Callable[[str], None] | None = None) -> PruningCheck:
    """Loss after dropping the ``n`` most redundant blocks of each ranking, against random drops.

    Parameters
    ----------
    loaded : LoadedModel
    rows : ndarray [n_rows, >= 2] of int
        Held-out token rows (BOS first).
    rankings : mapping method -> blocks, most redundant first
    prune_max : int, default=3
        ``1 <= prune_max < n_blocks``.
    random_drops : int, default=5
    seed : int, default=0
    checkpoint : Checkpoint, optional
        Each evaluation is a unit ``loss_<blocks>`` fingerprinted by ``model_fp``, the rows and the
        dropped blocks.
    model_fp : str
        Identity of the model (:func:`~featuregeo.tl.layers.heldout.model_fingerprint`).
    batch_size : int, default=4
    progress : callable, optional

    Returns
    -------
    PruningCheck
    """
    n_blocks = int(loaded.n_layers)
    if not isinstance(prune_max, int) or not 1 <= prune_max < n_blocks:
        raise InputError(f"prune_max: expected an integer in 1..{n_blocks - 1}. Got {prune_max!r} instead.")
    if not isinstance(random_drops, int) or random_drops < 0:
        raise InputError(f"random_drops: expected a non-negative integer. Got {random_drops!r} instead.")
    rows_fp = fingerprint(np.ascontiguousarray(rows, dtype=np.int64))
    seen: dict[tuple, HeldoutLoss] = {}

    def evaluate(drop) -> HeldoutLoss:
        key = tuple(sorted(int(x) for x in drop))
        if key not in seen:
            def compute() -> HeldoutLoss:
                v = heldout_loss(loaded, rows, drop=key, batch_size=batch_size)
                say(progress, f"layers: loss with blocks {list(key)} dropped: {v.loss:.4f} ({v.seconds:.1f}s)")
                return v

            if checkpoint is None:
                seen[key] = compute()
            else:
                name = "loss_" + ("-".join(map(str, key)) or "none")
                fp = fingerprint("layers.loss", model_fp, rows_fp, list(key), batch_size)
                seen[key] = checkpoint.result(name, fp, compute, HeldoutLoss)
        return seen[key]

    base = evaluate(())
    table = []
    for method, order in rankings.items():
        for n in range(1, prune_max + 1):
            v = evaluate(order[:n])
            table.append(PruningRow(method=method, n_drop=n, dropped=list(v.dropped), loss=v.loss,
                                    delta=v.loss - base.loss))
    rnd = []
    for s, perm in enumerate(random_orders(n_blocks, random_drops, seed)):
        for n in range(1, prune_max + 1):
            v = evaluate(perm[:n])
            rnd.append(PruningRow(method="random", n_drop=n, dropped=list(v.dropped), loss=v.loss,
                                  delta=v.loss - base.loss, seed=s))
    summary = []
    for n in range(1, prune_max + 1):
        ls = np.array([r.loss for r in rnd if r.n_drop == n])
        summary.append(RandomDropSummary(n_drop=n, mean=float(ls.mean()) if ls.size else None,
                                         std=float(ls.std(ddof=1)) if ls.size > 1 else None, n=int(ls.size)))
    return PruningCheck(baseline=base.loss, n_tokens=base.n_tokens, prune_max=prune_max, n_blocks=n_blocks,
                        table=table, random=rnd, random_summary=summary)
