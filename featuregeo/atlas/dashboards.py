"""The atlas's feature dashboards: per-layer ``data/dash_L.js`` and the shared ``data/dashboards.js``.

Both are loaded by the page only when a feature panel (or a text search) first needs them, so
they cost nothing at first paint.  Per layer, in the order of the layer's feature ids:

* ``ctx_block`` int32 [n, C] — harvest block of each shown context (-1 = none), ``ctx_pos``
  uint16 [n, C] the top token's position in it, ``ctx_max`` float32 [n, C] its activation, and
  ``ctx_acts4`` the per-token activations [n, C, window] as 4-bit levels ``round(15 * a / ctx_max)``,
  two per byte (low nibble first; enough to highlight, the JSON export keeps 8 bits);
* ``hist`` uint8 [n, bins] — histogram bar heights relative to the feature's fullest bin (a bin
  with any count is at least 1), over the fixed log-spaced ``edges``; ``density`` float32 [n];
* ``lg_pos`` / ``lg_neg`` int32 [n, m] token ids and ``lg_pos_v`` / ``lg_neg_v`` float32 [n, m]
  values of the most promoted / suppressed output tokens.

The shared file holds the tokens of every block some shown context comes from (token ids) and the
text of every token id used (``vocab_ids`` / ``vocab``), so contexts that share a block (common
across features and layers) are stored once.  Strings go through
:func:`~featuregeo.atlas.site.script_json` and the page inserts them with ``textContent`` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.atlas.result import AtlasLayer, AtlasParams
from featuregeo.atlas.site import b64, readable, script_json
from featuregeo.core.util import atomic_write_text


def hist_heights(hist: np.ndarray) -> np.ndarray:
    """uint8 bar heights: ``ceil(255 * count / row max)`` (0 only for empty bins)."""
    h = np.asarray(hist, dtype=np.float64)
    top = np.maximum(h.max(axis=1, keepdims=True), 1)
    return np.ceil(255.0 * h / top).astype(np.uint8)


def nibbles(acts: np.ndarray) -> np.ndarray:
    """uint8 activations (0..255) as 4-bit levels ``round(15 * a / 255)``, two per byte, low nibble first."""
    q = np.rint(np.asarray(acts, dtype=np.float64).ravel() * 15.0 / 255.0).astype(np.uint8)
    if q.size % 2:
        q = np.concatenate([q, np.zeros(1, np.uint8)])
    return (q[0::2] | (q[1::2] << 4)).astype(np.uint8)


class SharedTokens:
    """Blocks and token strings used by the layers written so far (for ``data/dashboards.js``)."""

    def __init__(self) -> None:
        self.blocks: dict[int, np.ndarray] = {}
        self.strings: dict[int, str] = {}
        self.block_len = 0

    def add(self, dash, blocks: np.ndarray, token_ids: np.ndarray) -> None:
        """Record the blocks ``blocks`` (global ids) of ``dash`` and the strings of ``token_ids``."""
        row = {int(b): i for i, b in enumerate(dash.block_ids)}
        for b in np.unique(blocks[blocks >= 0]).tolist():
            if b not in self.blocks:
                self.blocks[b] = dash.block_tokens[row[b]]
        self.block_len = max(self.block_len, int(dash.block_tokens.shape[1]) if dash.block_tokens.size else 0)
        used = set(np.unique(token_ids[token_ids >= 0]).tolist())
        for b in self.blocks.values():
            used.update(np.unique(b).tolist())
        for t in used:
            if t not in self.strings:
                self.strings[t] = dash.text(t)

    def payload(self) -> dict:
        ids = sorted(self.blocks)
        T = self.block_len
        toks = np.full((len(ids), T), -1, np.int32)
        for i, b in enumerate(ids):
            toks[i, :self.blocks[b].size] = self.blocks[b]
        vids = sorted(self.strings)
        return {"block_len": T, "blocks": b64(np.array(ids, np.int64), "i4"), "tokens": b64(toks, "i4"),
                "vocab_ids": b64(np.array(vids, np.int64), "i4"), "vocab": [self.strings[t] for t in vids]}


def layer_payload(la: AtlasLayer, dash, params: AtlasParams, shared: SharedTokens) -> dict:
    """The browser data of one layer's dashboards (and the blocks/strings it needs, added to ``shared``)."""
    ids = la.ids
    C = min(params.contexts, dash.k)
    blk = dash.block[ids, :C]
    m = min(params.logit_tokens, dash.logit_ids.shape[1]) if dash.logit_ids is not None else 0
    used = [np.zeros(0, np.int64)]
    d = {"layer": la.layer, "n": int(ids.size), "contexts": C, "window": dash.window, "before": dash.before,
         "n_tokens": dash.n_tokens, "edges": [float(x) for x in dash.edges],
         "ctx_block": b64(blk, "i4"), "ctx_pos": b64(np.clip(dash.pos[ids, :C], 0, 65535), "u2"),
         "ctx_max": b64(dash.value[ids, :C], "f4"), "ctx_acts4": b64(nibbles(dash.acts[ids, :C]), "u1"),
         "hist": b64(hist_heights(dash.hist[ids]), "u1"), "bins": int(dash.hist.shape[1]),
         "density": b64(dash.density[ids], "f4"), "logits": m}
    if m:
        for key, a in (("lg_pos", dash.logit_ids), ("lg_neg", dash.neg_ids)):
            d[key] = b64(a[ids, :m], "i4")
            used.append(a[ids, :m].ravel())
        d["lg_pos_v"] = b64(dash.logit_values[ids, :m], "f4")
        d["lg_neg_v"] = b64(dash.neg_values[ids, :m], "f4")
    shared.add(dash, blk, np.concatenate(used))
    return d


def write_dashboards(out: Path, la: AtlasLayer, dash, params: AtlasParams, shared: SharedTokens) -> Path:
    """``data/dash_L.js`` of one layer."""
    return readable(atomic_write_text(out / "data" / f"dash_{la.layer}.js",
                                      f"window.ATLAS_ADD_DASHBOARDS({script_json(layer_payload(la, dash, params, shared))});\n"))


def write_shared(out: Path, shared: SharedTokens) -> Path:
    """``data/dashboards.js``: the blocks and token strings every layer's contexts use."""
    return readable(atomic_write_text(out / "data" / "dashboards.js",
                                      f"window.ATLAS_ADD_TOKENS({script_json(shared.payload())});\n"))


__all__ = ["write_dashboards", "write_shared", "layer_payload", "hist_heights", "nibbles", "SharedTokens"]
