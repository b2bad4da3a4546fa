"""Held-out token rows for the layer comparison, and the identity of a model for checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.core.util import fingerprint
from featuregeo.tl.layers.params import LayersParams

HELD_OUT = 0.1  # fraction of documents (by hash) in the held-out split

__all__ = ["HELD_OUT", "HeldoutRows", "heldout_rows", "model_fingerprint"]


def _empty_rows() -> np.ndarray:
    return np.zeros((0, 0), dtype=np.int64)


@dataclass
class HeldoutRows(Result):
    """Token rows (BOS first) from the held-out split of a corpus, genres interleaved.

    Similarity rows and loss rows come from different documents (one block per document).

    Attributes
    ----------
    corpus : str
        ``"<corpus name>:heldout(0.1)"``.
    rows : ndarray [n_blocks, 1 + block_len] of int64
        Rows for the similarity measures.
    loss_rows : ndarray [loss_blocks, 1 + loss_block_len] of int64
        Rows for the pruning loss (empty when ``prune_max = 0``).
    genres, loss_genres : list of str
        Genre of each row.
    doc_ids, loss_doc_ids : list of str
        Document of each row.
    """

    kind = "heldout_rows"
    corpus: str = ""
    rows: np.ndarray = field(default_factory=_empty_rows)
    loss_rows: np.ndarray = field(default_factory=_empty_rows)
    genres: list[str] = field(default_factory=list)
    loss_genres: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    loss_doc_ids: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Tokens read for the similarity measures (BOS excluded)."""
        return int(self.rows.shape[0] * max(0, self.rows.shape[1] - 1))

    def fingerprint(self) -> str:
        """Hash of the similarity and loss token rows."""
        return fingerprint(np.asarray(self.rows, dtype=np.int64), np.asarray(self.loss_rows, dtype=np.int64))


def heldout_rows(tokenizer, params: LayersParams, *, corpus=None) -> HeldoutRows:
    """Draw the similarity and loss rows of ``params`` from the held-out split of ``corpus``.

    Parameters
    ----------
    tokenizer : the model's tokenizer (``LoadedModel.tokenizer``)
    params : LayersParams
        ``n_blocks``, ``block_len``, ``loss_blocks``, ``loss_block_len`` (loss rows only when
        ``prune_max > 0``) and ``seed`` (of the split).
    corpus : Corpus, optional
        Default: the built-in corpus.  Its held-out split (10 % of documents, by hash) is used.

    Returns
    -------
    HeldoutRows

    Raises
    ------
    InputError
        When the held-out split has too few documents for the requested blocks.
    """
    from featuregeo.io.corpus import blocks, builtin_corpus

    params.validate()
    corpus = builtin_corpus(warn=False) if corpus is None else corpus
    _, held = corpus.split(HELD_OUT, seed=params.seed)
    genres = held.genres
    docs = {g: list(held.by_genre(g)) for g in genres}
    used: set[str] = set()

    def take(n, length):
        per = []
        for g in genres:
            free = [d for d in docs[g] if d.doc_id not in used]
            try:
                per.append(list(blocks(free, tokenizer, length, add_bos=True, max_blocks=-(-n // len(genres)),
                                       max_blocks_per_doc=1)))
            except InputError:  # no document of this genre is long enough
                per.append([])
        out = []
        for k in range(max((len(p) for p in per), default=0)):
            out += [p[k] for p in per if k < len(p)]
        out = out[:n]
        used.update(b.doc_id for b in out)
        return out

    sim = take(params.n_blocks, params.block_len)
    if len(sim) < params.n_blocks:
        raise InputError(f"n_blocks: the held-out split of {corpus.name or 'the corpus'} has {len(sim)} documents of "
                         f">= {params.block_len} tokens; expected at least {params.n_blocks} (lower --n-blocks or "
                         "--block-len)")
    loss = take(params.loss_blocks, params.loss_block_len) if params.prune_max > 0 else []
    if params.prune_max > 0 and len(loss) < params.loss_blocks:
        raise InputError(f"loss_blocks: the held-out split of {corpus.name or 'the corpus'} has {len(loss)} further "
                         f"documents of >= {params.loss_block_len} tokens; expected at least {params.loss_blocks} "
                         "(lower --loss-blocks or --loss-block-len)")
    width = params.loss_block_len + 1
    return HeldoutRows(
        corpus=f"{corpus.name or 'corpus'}:heldout({HELD_OUT:g})",
        rows=np.stack([b.input_ids for b in sim]).astype(np.int64),
        loss_rows=(np.stack([b.input_ids for b in loss]).astype(np.int64) if loss
                   else np.zeros((0, width), dtype=np.int64)),
        genres=[b.genre for b in sim], loss_genres=[b.genre for b in loss],
        doc_ids=[str(b.doc_id) for b in sim], loss_doc_ids=[str(b.doc_id) for b in loss])


def model_fingerprint(loaded) -> str:
    """Identity of a loaded model for checkpoints: name, what was read, dtype, kind and shape."""
    return fingerprint("model", str(loaded.name), str(getattr(loaded, "source", "")), str(loaded.dtype),
                       str(getattr(loaded, "kind", "")), int(loaded.n_layers), int(loaded.d_model))
