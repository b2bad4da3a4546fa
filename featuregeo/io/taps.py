"""Residual taps: keep the activations of chosen rows from a forward pass that runs anyway.

A harvest reads every block of its corpus through the model.  A :class:`ResidualTap` given to
:func:`featuregeo.io.harvest.harvest` (``taps=[...]``) copies, from that same forward pass, the
residual stream of some of those rows — selected by their index in the harvest's block order — so
an analysis that needs raw activations of held-out text (the galaxy's activation spectrum, the
layer comparison's representations) does not run the model again.

The model is causal: the activations of the first ``length`` tokens of a row equal those of the row
cut to that length, so a tap may keep a prefix (``length``) and stand for the shorter rows.

Rows the forward pass never delivered (a resumed harvest skips its finished shards) are read by
:meth:`ResidualTap.fill`, through the same :func:`~featuregeo.io.models.iter_residual_stream`.

>>> tap = ResidualTap({0: ids0, 5: ids5}, layers=[3, 9], length=64)             # doctest: +SKIP
>>> harvest(model, corpus, "out/h", params, saes=saes, taps=[tap])                # doctest: +SKIP
>>> tap.fill(model); x = tap.stack()   # [2 layers, 2 rows, 64 tokens, d_model]   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from featuregeo.core.errors import InputError

__all__ = ["ResidualTap", "tap_request"]


class ResidualTap:
    """Collects residual activations of some rows of a forward pass (see the module docstring).

    Parameters
    ----------
    rows : mapping int -> sequence of int
        Row index (in the order the forward pass reads its rows) -> the row's token ids, BOS first.
        The ids are checked against what the pass reads, so a misaligned index is an error, never
        silently wrong activations.
    layers : iterable of int
        Decoder blocks whose output (the residual stream, ``blocks.L.hook_resid_post``) is kept.
    embeddings : bool, default=False
        Also keep the input of block 0 (the scaled token embeddings), stacked first.
    length : int, optional
        Keep the first ``length`` tokens after BOS (default: the whole row).

    Attributes
    ----------
    order : list of int
        The wanted row indices, sorted; :meth:`stack` follows this order.
    """

    def __init__(self, rows: Mapping[int, Sequence[int]], layers: Iterable[int], *, embeddings: bool = False,
                 length: int | None = None):
        if not rows:
            raise InputError("rows: expected at least one row to tap. Got none instead.")
        self.ids = {int(k): np.asarray(v, dtype=np.int64) for k, v in rows.items()}
        self.order = sorted(self.ids)
        self.layers = tuple(sorted({int(x) for x in layers}))
        if not self.layers:
            raise InputError("layers: expected at least one layer to tap. Got none instead.")
        self.embeddings = bool(embeddings)
        shortest = min(len(v) for v in self.ids.values()) - 1
        if length is not None and not 1 <= int(length) <= shortest:
            raise InputError(f"length: expected 1..{shortest} tokens (the shortest tapped row after BOS). "
                             f"Got {length!r} instead.")
        self.length = None if length is None else int(length)
        self._got: dict[int, np.ndarray] = {}

    # -- what a forward pass must read ---------------------------------------------------------
    def wants(self, first_row: int, n_rows: int) -> bool:
        """Whether rows ``first_row .. first_row + n_rows - 1`` hold a row still to collect."""
        return any(first_row <= r < first_row + n_rows and r not in self._got for r in self.order)

    def missing(self) -> list[int]:
        """Wanted rows not collected yet."""
        return [r for r in self.order if r not in self._got]

    # -- collecting ----------------------------------------------------------------------------
    def take(self, batch, first_row: int = 0) -> int:
        """Keep the wanted rows of one :class:`~featuregeo.io.models.ResidualBatch`.

        ``first_row`` is the index of the batch's input 0 in the tap's row order (a harvest passes
        the index of its shard's first block).  Returns how many rows were kept.
        """
        kept = 0
        for i in range(len(batch.rows)):
            r = first_row + batch.rows.start + i
            if r not in self.ids or r in self._got:
                continue
            want = self.ids[r]
            got = batch.input_ids[i].numpy()
            if got.shape[0] < want.shape[0] or not np.array_equal(got[: want.shape[0]], want):
                raise InputError(f"tap: row {r} of the forward pass has other tokens than the row asked for; "
                                 "expected the same rows in the same order")
            pos = np.flatnonzero(batch.mask[i].numpy()[: want.shape[0]])
            if self.length is not None:
                pos = pos[: self.length]
            reps = ([batch.embeddings] if self.embeddings else []) + [batch.acts[L] for L in self.layers]
            if any(x is None for x in reps):
                raise InputError("tap: the forward pass did not read every layer the tap needs; expected "
                                 "layers and embeddings from tap_request()")
            self._got[r] = np.stack([np.asarray(x[i].float().numpy()[pos], dtype=np.float32) for x in reps])
            kept += 1
        return kept

    def fill(self, model, *, batch_size: int = 8) -> int:
        """Read the rows still missing with a forward pass of their own; returns how many."""
        from featuregeo.io.models import iter_residual_stream

        todo = self.missing()
        for k in range(0, len(todo), batch_size):
            part = todo[k: k + batch_size]
            for b in iter_residual_stream(model, [self.ids[r] for r in part], self.layers, batch_size=len(part),
                                          seq_len=None, add_bos=False, drop_bos=True, out_dtype="float32",
                                          embeddings=self.embeddings):
                self._take_rows(b, part)
        return len(todo)

    def _take_rows(self, batch, rows: list[int]) -> None:
        for i, r in enumerate(rows):
            one = type(batch)(acts={L: a[i: i + 1] for L, a in batch.acts.items()},
                              input_ids=batch.input_ids[i: i + 1], mask=batch.mask[i: i + 1], rows=range(0, 1),
                              embeddings=None if batch.embeddings is None else batch.embeddings[i: i + 1])
            self.take(one, r)

    # -- results -------------------------------------------------------------------------------
    def stack(self) -> np.ndarray:
        """``[n_reps, n_rows, T, d_model]`` float32 (reps: the embeddings if kept, then ``layers``); every
        row collected, all of one length (else InputError: use ``length``)."""
        if self.missing():
            raise InputError(f"tap: rows {self.missing()[:5]} were never read; expected fill(model) first")
        lens = {self._got[r].shape[1] for r in self.order}
        if len(lens) != 1:
            raise InputError(f"tap: rows of different lengths {sorted(lens)}; expected length= to cut them")
        return np.stack([self._got[r] for r in self.order], axis=1)

    def tokens(self, layer: int) -> np.ndarray:
        """Every collected token of ``layer``, rows concatenated: ``[n_tokens, d_model]`` float32."""
        if layer not in self.layers:
            raise InputError(f"layer: expected one of the tapped layers {list(self.layers)}. Got {layer!r} instead.")
        if self.missing():
            raise InputError(f"tap: rows {self.missing()[:5]} were never read; expected fill(model) first")
        k = self.layers.index(layer) + int(self.embeddings)
        return np.concatenate([self._got[r][k] for r in self.order], axis=0)


def tap_request(taps: Sequence[ResidualTap], first_row: int, n_rows: int) -> tuple[set[int], bool]:
    """The layers and whether the embeddings a forward pass over rows ``first_row ..`` must read for ``taps``."""
    live = [t for t in taps if t.wants(first_row, n_rows)]
    return {L for t in live for L in t.layers}, any(t.embeddings for t in live)
