"""The demo's one forward pass over its held-out sample.

The harvest reads every held-out block through the model anyway.  Two
:class:`~featuregeo.io.taps.ResidualTap` ride along on that pass:

* the galaxy tap keeps, for every SAE layer, the residual stream of the first ``galaxy_blocks``
  blocks — the raw activations whose spectrum the SAE spectra are compared with;
* the layers tap keeps every representation (the input of block 0 and the output of every block) of
  the first ``n_blocks`` blocks of distinct documents, cut to ``block_len`` tokens (the model is
  causal, so a block's prefix has exactly the activations of the shorter row) — the rows of the
  layer comparison's similarity measures.

What no shared pass can serve: the atoms stage reads word pairs (other inputs), and the pruning
check runs the model with blocks dropped (another computation) on rows of other documents.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, atomic_write_json, fingerprint
from featuregeo.io.taps import ResidualTap

__all__ = ["harvest_prefix", "galaxy_tap", "layer_rows", "save_activations", "activations_ready"]


def harvest_prefix(corpus, tokenizer, *, block_len: int, max_blocks: int, max_blocks_per_doc: int,
                   need_blocks: int, need_docs: int) -> list:
    """The first blocks of the harvest, in its order (same call as the harvest's), until ``need_blocks``
    blocks and ``need_docs`` distinct documents are in hand (or the harvest's blocks run out)."""
    from featuregeo.io.corpus import blocks

    out, docs = [], set()
    for b in blocks(corpus, tokenizer, block_len, add_bos=True, max_blocks=max_blocks,
                    max_blocks_per_doc=max_blocks_per_doc):
        out.append(b)
        docs.add(b.doc_id)
        if len(out) >= need_blocks and len(docs) >= need_docs:
            break
    return out


def galaxy_tap(prefix: list, layers: list[int], n_blocks: int) -> ResidualTap:
    """Every SAE layer's residuals of the first ``n_blocks`` harvest blocks."""
    if len(prefix) < n_blocks:
        raise InputError(f"galaxy_blocks: the harvest has {len(prefix)} blocks; expected at least {n_blocks}")
    return ResidualTap({i: prefix[i].input_ids for i in range(n_blocks)}, layers)


def layer_rows(prefix: list, corpus, tokenizer, params, n_layers: int):
    """The layer comparison's held-out rows drawn from the harvest, and the tap that reads them.

    Similarity rows: the first ``params.n_blocks`` harvest blocks of distinct documents, cut to
    ``params.block_len`` tokens after BOS.  Loss rows (pruning check): ``params.loss_blocks`` blocks
    of ``params.loss_block_len`` tokens, one per document, from held-out documents the similarity
    rows do not use, genres interleaved.

    Returns
    -------
    (HeldoutRows, ResidualTap)
    """
    from featuregeo.io.corpus import blocks
    from featuregeo.tl.layers import HeldoutRows

    chosen, used = [], set()
    for i, b in enumerate(prefix):
        if b.doc_id not in used and len(b.input_ids) > params.block_len:
            used.add(b.doc_id)
            chosen.append(i)
        if len(chosen) == params.n_blocks:
            break
    if len(chosen) < params.n_blocks:
        raise InputError(f"n_blocks: the harvest's first blocks come from {len(chosen)} documents; expected at "
                         f"least {params.n_blocks}")
    cut = {i: np.asarray(prefix[i].input_ids[: params.block_len + 1], dtype=np.int64) for i in chosen}
    loss = []
    if params.prune_max > 0:
        free = [d for d in corpus if d.doc_id not in used]
        loss = list(blocks(free, tokenizer, params.loss_block_len, add_bos=True, max_blocks=params.loss_blocks,
                           max_blocks_per_doc=1))
        if len(loss) < params.loss_blocks:
            raise InputError(f"loss_blocks: {len(loss)} further held-out documents of >= {params.loss_block_len} "
                             f"tokens; expected at least {params.loss_blocks}")
    width = params.loss_block_len + 1
    rows = HeldoutRows(
        corpus=f"{getattr(corpus, 'name', '') or 'corpus'}:heldout(0.1):harvest-blocks",
        rows=np.stack([cut[i] for i in chosen]),
        loss_rows=np.stack([b.input_ids for b in loss]).astype(np.int64) if loss else np.zeros((0, width), np.int64),
        genres=[prefix[i].genre for i in chosen], loss_genres=[b.genre for b in loss],
        doc_ids=[str(prefix[i].doc_id) for i in chosen], loss_doc_ids=[str(b.doc_id) for b in loss])
    tap = ResidualTap(cut, range(n_layers), embeddings=True)
    return rows, tap


def _identity(tap: ResidualTap, model_name: str) -> str:
    return fingerprint("demo.activations", model_name, list(tap.layers), [tap.ids[r] for r in tap.order])


def activations_ready(path: Path, tap: ResidualTap, model_name: str) -> bool:
    """Whether ``path`` holds the activations of exactly these rows and layers (its ``.json`` says so)."""
    side = path.with_suffix(".json")
    try:
        return path.is_file() and json.loads(side.read_text())["identity"] == _identity(tap, model_name)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def save_activations(path: Path, tap: ResidualTap, model_name: str) -> None:
    """``layer_L`` arrays ``[n_tokens, d_model]`` (float32) for the galaxy, and the ``.json`` naming their rows."""
    buf = io.BytesIO()
    np.savez(buf, **{f"layer_{L}": tap.tokens(L) for L in tap.layers})
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), {"identity": _identity(tap, model_name), "rows": tap.order,
                                                  "layers": list(tap.layers)})
