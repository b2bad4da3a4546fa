"""Collecting feature dashboards inside one shard, and merging shards.

Per SAE layer, a shard keeps (arrays ``dash_L_*`` of the shard file):

* ``value`` float32 [d_sae, k] — the shard's top-k block maxima of each feature, descending (0 pads);
* ``block`` int32 [d_sae, k] — their blocks (index within the shard; -1 pads);
* ``pos`` int32 [d_sae, k] — the token of the block where the maximum sits (the first one on ties);
* ``acts`` uint8 [d_sae, k, window] — the feature's activation on every token of the context
  window, as ``round(255 * a / value)`` (so the top token is 255; 0 outside the block);
* ``hist`` int32 [d_sae, n_bins] — counts of the feature's positive token activations in the fixed
  log-spaced bins :data:`HIST_EDGES` (everything below the first edge in the first bin, above
  the last in the last).

and once per shard ``tokens`` int32 [blocks, block_len] (the text tokens) and the strings of the
shard's distinct tokens (``vocab_ids``, ``vocab_utf8``, ``vocab_offsets``).

The order is total: larger value first, then the earlier block.  A shard's top-k therefore holds
every context that can be in the global top-k, and merging shards (:func:`merge_top`) gives the
same arrays whatever the sharding (a test checks one shard against several).
"""

from __future__ import annotations

import numpy as np

#: fixed log-spaced histogram edges of positive activations (4 bins per decade, 1e-3 .. 1e4)
HIST_EDGES = 10.0 ** np.arange(-3.0, 4.0001, 0.25)
N_BINS = HIST_EDGES.size - 1


def window_offsets(window: int) -> tuple[int, int]:
    """``(before, after)``: tokens shown before and after the top token of a context."""
    after = (window - 1) // 4
    return window - 1 - after, after


def hist_bins(values: np.ndarray) -> np.ndarray:
    """The :data:`HIST_EDGES` bin of each positive value (clipped to the first and last bin)."""
    b = np.floor((np.log10(np.maximum(values, 1e-30)) + 3.0) * 4.0).astype(np.int64)
    return np.clip(b, 0, N_BINS - 1)


def top_order(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Per row, column order by value descending, then block ascending (pads: value <= 0 last)."""
    v = np.where(values > 0, values, -np.inf)
    big = np.where(blocks >= 0, blocks, np.iinfo(np.int64).max)
    # lexsort sorts by the last key first: value (negated, descending), then block (ascending)
    return np.lexsort((big, -v), axis=-1)


class ShardDashboards:
    """Accumulates one layer's dashboard arrays over the batches of one shard.

    Parameters
    ----------
    d_sae : int
    k : int
        Contexts kept per feature.
    window : int
        Tokens per context.
    """

    def __init__(self, d_sae: int, k: int, window: int):
        self.d_sae, self.k, self.window = int(d_sae), int(k), int(window)
        self.before, self.after = window_offsets(self.window)
        self.hist = np.zeros(self.d_sae * N_BINS, dtype=np.int64)
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.n_blocks = 0

    def add(self, f, mask) -> None:
        """One batch: ``f`` torch [B, T, d_sae] feature activations (0 at padding), ``mask`` [B, T]."""
        import torch

        B, T, d = f.shape
        f = f.masked_fill(~mask[..., None], 0)
        nz = f > 0
        idx = nz.nonzero()
        vals = f[nz].numpy()  # row-major order, aligned with idx
        self.hist += np.bincount(idx[:, 2].numpy() * N_BINS + hist_bins(vals), minlength=self.hist.size)
        bmax, bpos = f.max(dim=1)  # [B, d]: first maximal token on ties
        kk = min(self.k, B)
        v = bmax.numpy().T  # [d, B]
        blocks = np.broadcast_to(np.arange(B), v.shape)
        order = top_order(v, blocks)[:, :kk]  # [d, kk]
        top_v = np.take_along_axis(v, order, axis=1)
        keep = top_v > 0
        top_b = np.where(keep, order, -1)
        top_p = np.take_along_axis(bpos.numpy().T, order, axis=1)
        # the context window of each kept (feature, block, position)
        offs = np.arange(-self.before, self.after + 1)
        t = top_p[..., None] + offs  # [d, kk, W]
        inside = (t >= 0) & (t < T) & keep[..., None]
        tb = torch.as_tensor(np.where(inside, order[..., None], 0))
        tt = torch.as_tensor(np.clip(t, 0, T - 1))
        tf = torch.arange(d)[:, None, None].expand(d, kk, self.window)
        w = f[tb, tt, tf].numpy()
        w = np.where(inside, w, 0.0)
        scale = np.where(keep, top_v, 1.0)[..., None]
        q = np.clip(np.rint(255.0 * w / scale), 0, 255).astype(np.uint8)
        self.parts.append((np.where(keep, top_v, 0).astype(np.float32),
                           np.where(keep, top_b + self.n_blocks, -1).astype(np.int64),
                           np.where(keep, top_p, 0).astype(np.int64), q))
        self.n_blocks += B

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The shard-file arrays ``{prefix}value``, ``block``, ``pos``, ``acts``, ``hist``."""
        if self.parts:
            value, block, pos, acts = (np.concatenate([p[i] for p in self.parts], axis=1) for i in range(4))
        else:
            value = np.zeros((self.d_sae, 0), np.float32)
            block = pos = np.zeros((self.d_sae, 0), np.int64)
            acts = np.zeros((self.d_sae, 0, self.window), np.uint8)
        value, block, pos, (acts,) = merge_top(value, block, pos, self.k, (acts, 0))
        return {f"{prefix}value": value, f"{prefix}block": block.astype(np.int32), f"{prefix}pos": pos.astype(np.int32),
                f"{prefix}acts": acts, f"{prefix}hist": self.hist.reshape(self.d_sae, N_BINS).astype(np.int32)}


def merge_top(value: np.ndarray, block: np.ndarray, pos: np.ndarray, k: int, *rides: tuple[np.ndarray, int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Keep each row's top ``k`` candidates (value descending, then block ascending), padded to ``k``.

    Parameters
    ----------
    value : [d, c] float32 (<= 0 = empty)
    block : [d, c] int (-1 = empty)
    pos : [d, c] int
    k : int
    *rides : (array [d, c, ...], fill)
        Arrays reordered along with the candidates; ``fill`` marks empty slots.

    Returns
    -------
    value [d, k] float32, block [d, k] int64, pos [d, k] int64, [each ride, [d, k, ...]]
    """
    d, c = value.shape
    if c < k:  # pad with empty candidates
        pad = k - c
        value = np.concatenate([value, np.zeros((d, pad), value.dtype)], axis=1)
        block = np.concatenate([block, np.full((d, pad), -1, block.dtype)], axis=1)
        pos = np.concatenate([pos, np.zeros((d, pad), pos.dtype)], axis=1)
        rides = tuple((np.concatenate([a, np.full((d, pad, *a.shape[2:]), f, a.dtype)], axis=1), f) for a, f in rides)
    order = top_order(value, block.astype(np.int64))[:, :k]
    v = np.take_along_axis(value, order, axis=1)
    keep = v > 0
    b = np.where(keep, np.take_along_axis(block, order, axis=1), -1).astype(np.int64)
    p = np.where(keep, np.take_along_axis(pos, order, axis=1), 0).astype(np.int64)
    out = []
    for a, f in rides:
        o = order.reshape(*order.shape, *([1] * (a.ndim - 2)))
        r = np.take_along_axis(a, o, axis=1)
        out.append(np.where(keep.reshape(*keep.shape, *([1] * (a.ndim - 2))), r, f).astype(a.dtype))
    return np.where(keep, v, 0).astype(np.float32), b, p, out


def context_tokens(tokens: np.ndarray, block: np.ndarray, pos: np.ndarray, before: int, after: int) -> np.ndarray:
    """Token ids of each context window, ``[..., before + 1 + after]`` int32 (-1 outside the block or empty).

    ``tokens`` [blocks, T] are the shard's block tokens; ``block`` (-1 = empty) and ``pos`` index them.
    """
    T = tokens.shape[1]
    t = pos[..., None] + np.arange(-before, after + 1)
    inside = (t >= 0) & (t < T) & (block[..., None] >= 0)
    ids = tokens[np.clip(block, 0, None)[..., None], np.clip(t, 0, T - 1)]
    return np.where(inside, ids, -1).astype(np.int32)


def token_strings(tokenizer, ids) -> dict[str, np.ndarray]:
    """``vocab_ids`` / ``vocab_utf8`` / ``vocab_offsets``: each id's decoded text as UTF-8 (no pickles)."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    ids = ids[ids >= 0]
    enc = [tokenizer.decode([int(i)]).encode("utf-8") for i in ids]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in enc])
    return {"vocab_ids": ids.astype(np.int32), "vocab_utf8": np.frombuffer(b"".join(enc), dtype=np.uint8).copy(),
            "vocab_offsets": offsets}


def read_strings(ids: np.ndarray, utf8: np.ndarray, offsets: np.ndarray) -> dict[int, str]:
    """Inverse of :func:`token_strings`: ``{token id: text}``."""
    raw = utf8.tobytes()
    return {int(i): raw[offsets[j]:offsets[j + 1]].decode("utf-8", errors="replace") for j, i in enumerate(ids)}


__all__ = ["ShardDashboards", "merge_top", "context_tokens", "token_strings", "read_strings", "hist_bins",
           "window_offsets", "top_order", "HIST_EDGES", "N_BINS"]
