"""Documents with genre labels, and the built-in offline corpus.

A :class:`Corpus` is a list of :class:`Document` (text, source, genre, doc_id) plus a manifest
(per source: genre, licence, bytes, documents, tokens).  Sources:

- ``"builtin"``: assembled at run time from installed packages (nothing is copied into the
  repository) — genre ``code``: the Python standard library source; ``math``: the sympy package
  source and docstrings; ``prose``: the Python documentation reST sources (Debian
  ``python3.11-doc``), the King James Bible (Debian ``bible-kjv``), fortunes (Debian
  ``fortunes``) and the GCIDE / Webster 1913 dictionary (Debian ``dict-gcide``);
- a local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.txt`` file (a ``text`` field, optional ``genre``);
- a folder of text files (one file = one document);
- ``hf:NAME`` (or ``org/name``): a Hugging Face dataset streamed when online.

:func:`split` makes a deterministic train / held-out split by document (hash of doc_id and a seed);
:func:`blocks` tokenises documents into complete blocks of ``block_len`` tokens for the harvest;
:meth:`Corpus.fingerprint` is the corpus's identity (its documents, in order).

Text must be UTF-8: a single ``.jsonl``/``.json``/``.txt`` file that is not is refused with a
one-line :class:`~featuregeo.core.errors.InputError` naming the file (and line); a folder corpus
skips and counts such files (``manifest["skipped"]``) and warns.

Modules: :mod:`~featuregeo.io.corpus.documents` (Document, Corpus, split),
:mod:`~featuregeo.io.corpus.tokens` (token counts, blocks), :mod:`~featuregeo.io.corpus.loaders`
(files, folders, hub datasets, :func:`load_corpus`), :mod:`~featuregeo.io.corpus.builtin_sources`.
"""

from __future__ import annotations

from featuregeo.io.corpus.builtin_sources import BUILTIN_SOURCES, BuiltinSource, MissingSource, builtin_corpus
from featuregeo.io.corpus.documents import GENRES, Corpus, Document, doc_hash, is_held_out, split
from featuregeo.io.corpus.loaders import file_corpus, folder_corpus, hub_corpus, load_corpus
from featuregeo.io.corpus.tokens import Block, blocks, count_tokens

__all__ = ["Document", "Corpus", "Block", "GENRES", "split", "is_held_out", "doc_hash", "count_tokens", "blocks",
           "load_corpus", "file_corpus", "folder_corpus", "hub_corpus", "builtin_corpus", "BUILTIN_SOURCES",
           "BuiltinSource", "MissingSource"]
