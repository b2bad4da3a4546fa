"""Token counts per source and complete token blocks for the harvest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_json
from featuregeo.io.corpus.documents import Corpus, Document



def _tokenizer_key(tokenizer) -> str:
    probe = "featuregeo tokenizer probe: def f(x): return x ** 2  # ∑ naïve"
    try:
        ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    except Exception:
        ids = []
    parts = [type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")),
             str(len(tokenizer)) if hasattr(tokenizer, "__len__") else "", ",".join(map(str, ids))]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=12).hexdigest()


def _source_fingerprint(docs: Sequence[Document]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for d in docs:
        h.update(d.doc_id.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        h.update(d.text.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()


def _token_cache_path() -> Path:
    from featuregeo.io.models import featuregeo_cache_root

    return featuregeo_cache_root() / "corpus" / "token_counts.json"


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def count_tokens(corpus: Corpus, tokenizer, *, use_cache: bool = True, batch_docs: int = 64
                 ) -> dict[tuple[str, str], int]:
    """Count tokens per source (no special tokens) into ``corpus.manifest``; returns
    (source, genre) -> tokens.

    Counts are cached in ``<featuregeo cache>/corpus/token_counts.json`` keyed by the source's
    content hash and the tokenizer, so the built-in corpus is tokenised once per tokenizer.
    """
    tkey = _tokenizer_key(tokenizer)
    path = _token_cache_path()
    cache: dict = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    by_src: dict[tuple[str, str], list[Document]] = {}
    for d in corpus:
        by_src.setdefault((d.source, d.genre), []).append(d)
    counts: dict[tuple[str, str], int] = {}
    dirty = False
    for src, docs in by_src.items():
        key = f"{tkey}:{_source_fingerprint(docs)}"
        if key in cache:
            counts[src] = int(cache[key])
            continue
        n = 0
        for i in range(0, len(docs), batch_docs):
            n += sum(len(x) for x in _tokenize(tokenizer, [d.text for d in docs[i:i + batch_docs]]))
        counts[src] = n
        cache[key] = n
        dirty = True
    if use_cache and dirty:
        try:
            atomic_write_json(path, cache)
        except OSError:
            pass  # a read-only cache is not an error
    for s in corpus.manifest["sources"]:
        s["tokens"] = counts.get((s["source"], s["genre"]), s.get("tokens"))
    corpus.manifest["tokenizer"] = str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
    corpus.refresh_totals()
    return counts


# --------------------------------------------------------------------------------------------
# blocks


@dataclass(frozen=True)
class Block:
    """A complete block of tokens from one document.

    ``input_ids`` holds ``block_len`` text tokens, preceded by BOS when ``add_bos`` was set
    (length ``block_len + 1``); ``start`` is the offset of its first text token in the document.
    """

    input_ids: np.ndarray
    doc_id: str
    genre: str
    source: str
    start: int


def blocks(corpus: Corpus | Iterable[Document], tokenizer, block_len: int = 256, *, add_bos: bool = True,
           max_blocks: int | None = None, max_blocks_per_doc: int | None = None,
           batch_docs: int = 32) -> Iterator[Block]:
    """Tokenise documents and yield complete blocks of ``block_len`` tokens, in corpus order.

    Each document is tokenised without special tokens and cut into consecutive, non-overlapping
    blocks of ``block_len`` tokens; a partial trailing block is dropped (documents shorter than
    ``block_len`` give none).  With ``add_bos=True`` every block is prefixed by the tokenizer's BOS
    token (so it holds ``block_len + 1`` ids and the model reads each block as a fresh sequence;
    drop the BOS position when reading activations).

    Parameters
    ----------
    corpus : Corpus or iterable of Document
    tokenizer : a Hugging Face tokenizer (``LoadedModel.tokenizer``)
    block_len : int, default=256
        Text tokens per block.
    add_bos : bool, default=True
    max_blocks : int, optional
        Stop after this many blocks.
    max_blocks_per_doc : int, optional
        Take at most this many blocks from each document (spreads a budget over more documents).
    batch_docs : int, default=32
        Documents tokenised per tokenizer call.

    Yields
    ------
    Block

    Raises
    ------
    InputError
        When the corpus yields no complete block (raised at the end of iteration).
    """
    if not isinstance(block_len, int) or block_len < 1:
        raise InputError(f"block_len: expected a positive integer. Got {block_len!r} instead.")
    for name, v in (("max_blocks", max_blocks), ("max_blocks_per_doc", max_blocks_per_doc)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise InputError(f"{name}: expected a positive integer or None. Got {v!r} instead.")
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is None:
        raise InputError("add_bos: the tokenizer has no BOS token; expected add_bos=False")
    return _iter_blocks(corpus, tokenizer, block_len, add_bos, bos, max_blocks, max_blocks_per_doc, batch_docs)


def _iter_blocks(corpus, tokenizer, block_len, add_bos, bos, max_blocks, max_per_doc, batch_docs):
    n = 0
    n_docs = 0
    docs = iter(corpus)
    while True:
        chunk = [d for _, d in zip(range(batch_docs), docs)]
        if not chunk:
            break
        n_docs += len(chunk)
        for d, ids in zip(chunk, _tokenize(tokenizer, [d.text for d in chunk])):
            k = len(ids) // block_len
            if max_per_doc is not None:
                k = min(k, max_per_doc)
            if k == 0:
                continue
            arr = np.asarray(ids[: k * block_len], dtype=np.int64).reshape(k, block_len)
            for j in range(k):
                row = arr[j]
                if add_bos:
                    row = np.concatenate(([bos], row)).astype(np.int64)
                yield Block(input_ids=row, doc_id=d.doc_id, genre=d.genre, source=d.source, start=j * block_len)
                n += 1
                if max_blocks is not None and n >= max_blocks:
                    return
    if n == 0:
        raise InputError(f"corpus: no complete block of {block_len} tokens in {n_docs} documents; "
                         "expected at least one document that long (lower block_len or add text)")


