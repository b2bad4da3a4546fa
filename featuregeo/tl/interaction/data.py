"""Token rows for the interaction basis: blocks of text from the built-in corpus, genres interleaved."""

from __future__ import annotations

import numpy as np

from featuregeo.core.errors import InputError

__all__ = ["HELD_OUT", "token_rows"]

HELD_OUT = 0.1  # fraction of documents (by hash) in the held-out split


def token_rows(tokenizer, n: int, length: int, *, split: str = "train", seed: int = 0, corpus=None) -> np.ndarray:
    """``n`` rows of ``1 + length`` token ids (BOS first), one block per document, genres interleaved.

    Parameters
    ----------
    tokenizer : the model's tokenizer
    n, length : int
    split : {"train", "heldout"}
        Which side of the corpus' deterministic document split (10 % held out, by hash and ``seed``).
    seed : int
    corpus : Corpus, optional
        Default: the built-in corpus.

    Returns
    -------
    ndarray [n, 1 + length] of int64
    """
    from featuregeo.io.corpus import blocks, builtin_corpus

    if split not in ("train", "heldout"):
        raise InputError(f"split: expected one of train, heldout. Got {split!r} instead.")
    corpus = builtin_corpus(warn=False) if corpus is None else corpus
    train, held = corpus.split(HELD_OUT, seed=seed)
    part = train if split == "train" else held
    per = []
    for g in part.genres:
        try:
            per.append(list(blocks(part.by_genre(g), tokenizer, length, add_bos=True, max_blocks=n,
                                   max_blocks_per_doc=1)))
        except InputError:
            per.append([])
    out = []
    for k in range(max((len(p) for p in per), default=0)):
        out += [p[k] for p in per if k < len(p)]
    if len(out) < n:
        raise InputError(f"n_rows: the {split} split of {corpus.name or 'the corpus'} has {len(out)} usable blocks of "
                         f"{length} tokens (one per document, genres interleaved); expected at least {n}")
    return np.stack([b.input_ids for b in out[:n]]).astype(np.int64)
