"""Offline labels for probes: document genre and the Python token category of each model token.

* :data:`PY_CATEGORIES` — ``keyword``, ``name``, ``op``, ``number``, ``string``, ``comment``,
  ``space`` (newlines, indentation, and text the Python tokenizer did not cover).
* :func:`python_char_categories` — the category of every character of a Python source, from the
  standard library :mod:`tokenize` module (a file that stops tokenizing keeps the categories found so
  far; the rest is ``-1``, unknown).
* :func:`labelled_rows` — token rows (BOS first) from documents, with the genre of each row and the
  Python category of each token of code documents (``-1`` elsewhere).  A model token takes the
  category of its first non-whitespace character.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from featuregeo.core.errors import InputError

__all__ = ["PY_CATEGORIES", "python_char_categories", "LabelledRows", "labelled_rows"]

PY_CATEGORIES = ("keyword", "name", "op", "number", "string", "comment", "space")
_CAT = {c: i for i, c in enumerate(PY_CATEGORIES)}
_STRING_TYPES = {tokenize.STRING} | {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                                     if hasattr(tokenize, n)}


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def python_char_categories(text: str) -> np.ndarray:
    """Category index (into :data:`PY_CATEGORIES`) of every character of ``text``; -1 where unknown.

    Characters not inside any Python token (spaces, newlines, indentation) are ``space``.
    """
    cats = np.full(len(text), _CAT["space"], dtype=np.int8)
    starts = _line_starts(text)
    reached = len(text)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NAME:
                c = _CAT["keyword"] if keyword.iskeyword(tok.string) else _CAT["name"]
            elif tok.type == tokenize.OP:
                c = _CAT["op"]
            elif tok.type == tokenize.NUMBER:
                c = _CAT["number"]
            elif tok.type in _STRING_TYPES:
                c = _CAT["string"]
            elif tok.type == tokenize.COMMENT:
                c = _CAT["comment"]
            else:
                continue
            (r0, c0), (r1, c1) = tok.start, tok.end
            if r0 - 1 >= len(starts) or r1 - 1 >= len(starts):
                break
            a, b = starts[r0 - 1] + c0, starts[r1 - 1] + c1
            cats[a:b] = c
            reached = b
    except (tokenize.TokenError, IndentationError, SyntaxError):
        cats[reached:] = -1
    return cats


@dataclass
class LabelledRows:
    """Token rows with probe labels.

    Attributes
    ----------
    rows : ndarray [n_rows, 1 + block_len] of int64, BOS first.
    genres : list of str, the genre of each row's document.
    doc_ids : list of str
    categories : ndarray [n_rows, block_len] of int8
        Python category of each token (BOS excluded) for code documents; -1 elsewhere.
    """

    rows: np.ndarray
    genres: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    categories: np.ndarray | None = None


def labelled_rows(documents: Iterable, tokenizer, block_len: int, *, max_rows: int,
                  max_per_doc: int = 1, code_genre: str = "code", what: str = "corpus") -> LabelledRows:
    """Cut documents into rows of ``block_len`` tokens (plus BOS) with genre and Python-category labels.

    Parameters
    ----------
    documents : iterable of Document (``text``, ``genre``, ``doc_id``)
    tokenizer : a fast Hugging Face tokenizer (offset mapping needed for the categories)
    block_len : int
    max_rows : int
    max_per_doc : int, default=1
        Rows per document (one row per document makes documents the bootstrap blocks).
    code_genre : str, default="code"
        Documents of this genre get Python token categories.
    what : str
        Name used in the error message.

    Raises
    ------
    InputError
        No document long enough for one row.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise InputError("tokenizer: no BOS token; expected a model whose tokenizer has one")
    rows, genres, ids, cats = [], [], [], []
    n_docs = 0
    for doc in documents:
        if len(rows) >= max_rows:
            break
        n_docs += 1
        text = doc.text
        code = doc.genre == code_genre
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=code)
        tok = enc["input_ids"]
        k = min(len(tok) // block_len, max_per_doc, max_rows - len(rows))
        if k <= 0:
            continue
        ccat = python_char_categories(text) if code else None
        for j in range(k):
            seg = tok[j * block_len:(j + 1) * block_len]
            rows.append([bos] + list(seg))
            genres.append(doc.genre)
            ids.append(doc.doc_id)
            lab = np.full(block_len, -1, dtype=np.int8)
            if code:
                offs = enc["offset_mapping"][j * block_len:(j + 1) * block_len]
                for t, (a, b) in enumerate(offs):
                    span = text[a:b]
                    skip = len(span) - len(span.lstrip())
                    pos = a + skip if skip < len(span) else a
                    if 0 <= pos < len(ccat):
                        lab[t] = ccat[pos] if skip < len(span) else _CAT["space"]
            cats.append(lab)
    if not rows:
        raise InputError(f"{what}: no document with {block_len} tokens among {n_docs}; expected at least one "
                         "(add text or lower block_len)")
    return LabelledRows(rows=np.asarray(rows, dtype=np.int64), genres=genres, doc_ids=ids,
                        categories=np.stack(cats))
