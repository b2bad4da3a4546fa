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
:func:`blocks` tokenises documents into complete blocks of ``block_len`` tokens for the harvest.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from featuregeo.core.util import atomic_write_json
from featuregeo.core.errors import InputError

GENRES = ("code", "math", "prose")
_DOC_TARGET_BYTES = 4096  # fortunes and dictionary entries are grouped into documents of ~4 KB


# --------------------------------------------------------------------------------------------
# documents and corpora


@dataclass(frozen=True)
class Document:
    """One document: its text, where it came from, its genre label and a corpus-unique id."""

    text: str
    source: str
    genre: str
    doc_id: str

    def __repr__(self) -> str:
        return (f"Document(doc_id={self.doc_id!r}, source={self.source!r}, genre={self.genre!r}, "
                f"chars={len(self.text)})")


def _source_stats(docs: Sequence[Document]) -> dict[tuple[str, str], dict]:
    """(source, genre) -> bytes and documents (a source such as a labelled jsonl can span genres)."""
    out: dict[tuple[str, str], dict] = {}
    for d in docs:
        s = out.setdefault((d.source, d.genre), {"bytes": 0, "documents": 0})
        s["bytes"] += len(d.text.encode("utf-8"))
        s["documents"] += 1
    return out


class Corpus(Sequence[Document]):
    """A list of :class:`Document` with a manifest.

    Parameters
    ----------
    documents : iterable of Document
        doc_ids must be unique.
    manifest : dict, optional
        ``{"name", "sources": [per-source dicts], "missing": [...]}``; per-source ``bytes`` and
        ``documents`` are (re)computed from the documents, other keys (licence, provider, origin,
        tokens) are kept.
    name : str, optional

    Attributes
    ----------
    manifest : dict
        ``name``, ``sources`` (source, genre, licence, provider, origin, bytes, documents, tokens),
        ``genres`` (bytes, documents, tokens per genre), ``missing`` sources, ``total_bytes``.
    """

    def __init__(self, documents: Iterable[Document], manifest: dict | None = None, name: str = ""):
        self._docs = list(documents)
        seen: set[str] = set()
        for d in self._docs:
            if not isinstance(d, Document):
                raise InputError(f"documents: expected Document objects. Got {type(d).__name__} instead.")
            if d.doc_id in seen:
                raise InputError(f"documents: duplicate doc_id {d.doc_id!r}; expected unique document ids")
            seen.add(d.doc_id)
        manifest = dict(manifest or {})
        self.name = name or manifest.get("name", "")
        prior_src = {s["source"]: s for s in manifest.get("sources", [])}
        prior = {(s["source"], s.get("genre")): s for s in manifest.get("sources", [])}
        sources = []
        for (src, genre), st in _source_stats(self._docs).items():
            before = prior.get((src, genre), {})
            entry = {"source": src, "genre": genre, "licence": None, "provider": None, "origin": None}
            entry.update({k: v for k, v in prior_src.get(src, {}).items()
                          if k in ("licence", "provider", "origin") and v is not None})
            entry.update(bytes=st["bytes"], documents=st["documents"], tokens=None)
            if (before.get("documents"), before.get("bytes")) == (st["documents"], st["bytes"]):
                entry["tokens"] = before.get("tokens")  # still the same documents
            sources.append(entry)
        self.manifest = {"name": self.name, "sources": sources, "missing": list(manifest.get("missing", []))}
        for k in ("tokenizer",):
            if k in manifest:
                self.manifest[k] = manifest[k]
        self._refresh_totals()

    def _refresh_totals(self) -> None:
        genres: dict[str, dict] = {}
        for s in self.manifest["sources"]:
            g = genres.setdefault(s["genre"], {"bytes": 0, "documents": 0, "tokens": 0})
            g["bytes"] += s["bytes"]
            g["documents"] += s["documents"]
            g["tokens"] = None if (g["tokens"] is None or s.get("tokens") is None) else g["tokens"] + s["tokens"]
        self.manifest["genres"] = dict(sorted(genres.items()))
        self.manifest["total_bytes"] = sum(s["bytes"] for s in self.manifest["sources"])
        self.manifest["documents"] = len(self._docs)

    # list-like
    def __len__(self) -> int:
        return len(self._docs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._subset(self._docs[i])
        return self._docs[i]

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs)

    def __repr__(self) -> str:
        g = ", ".join(f"{k}: {v['documents']} docs / {v['bytes'] / 1e6:.1f} MB"
                      for k, v in self.manifest["genres"].items())
        return f"Corpus({self.name!r}, {len(self)} documents; {g})"

    def _subset(self, docs: Iterable[Document], suffix: str = "") -> "Corpus":
        m = dict(self.manifest)
        return Corpus(docs, manifest=m, name=self.name + suffix)

    @property
    def genres(self) -> list[str]:
        return sorted(self.manifest["genres"])

    @property
    def doc_ids(self) -> list[str]:
        return [d.doc_id for d in self._docs]

    def by_genre(self, genre: str) -> "Corpus":
        if genre not in self.manifest["genres"]:
            raise InputError(f"genre: {genre!r} not in this corpus; expected one of {self.genres}")
        return self._subset((d for d in self._docs if d.genre == genre), f"[{genre}]")

    def filter(self, predicate: Callable[[Document], bool]) -> "Corpus":
        return self._subset(d for d in self._docs if predicate(d))

    def interleaved(self) -> "Corpus":
        """The same documents in round-robin order over genres, and within a genre over sources (each
        source keeping its own order), so that any prefix — a ``max_blocks`` limit — is balanced."""
        per_genre = []
        for g in sorted({d.genre for d in self._docs}):
            docs = [d for d in self._docs if d.genre == g]
            per_genre.append(_round_robin([[d for d in docs if d.source == s] for s in sorted({d.source for d in docs})]))
        return self._subset(_round_robin(per_genre))

    def split(self, held_out: float = 0.1, *, seed: int = 0) -> tuple["Corpus", "Corpus"]:
        """(train, held_out) — see :func:`split`."""
        return split(self, held_out=held_out, seed=seed)

    def limit(self, max_bytes_per_genre: int | None = None, *, max_bytes_per_source: int | None = None,
              seed: int = 0) -> "Corpus":
        """A deterministic subset: documents in hash order until each genre/source budget is reached.

        Useful to balance genres (the dictionary alone is 40 MB of prose) or to harvest a sample.
        Documents keep their corpus order in the result.
        """
        keep: set[str] = set()
        used_g: dict[str, int] = {}
        used_s: dict[str, int] = {}
        for d in sorted(self._docs, key=lambda d: _doc_hash(d.doc_id, seed)):
            n = len(d.text.encode("utf-8"))
            if max_bytes_per_genre is not None and used_g.get(d.genre, 0) >= max_bytes_per_genre:
                continue
            if max_bytes_per_source is not None and used_s.get(d.source, 0) >= max_bytes_per_source:
                continue
            keep.add(d.doc_id)
            used_g[d.genre] = used_g.get(d.genre, 0) + n
            used_s[d.source] = used_s.get(d.source, 0) + n
        return self._subset(d for d in self._docs if d.doc_id in keep)

    def count_tokens(self, tokenizer, *, use_cache: bool = True) -> "Corpus":
        """Fill the manifest's ``tokens`` per source (cached per source content and tokenizer)."""
        count_tokens(self, tokenizer, use_cache=use_cache)
        return self

def _round_robin(groups: list[list]) -> list:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def _doc_hash(doc_id: str, seed: int) -> int:
    h = hashlib.blake2b(f"{int(seed)}\x00{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big")


def is_held_out(doc_id: str, held_out: float = 0.1, *, seed: int = 0) -> bool:
    """Whether ``doc_id`` falls in the held-out part (blake2b of seed and id; stable everywhere)."""
    return _doc_hash(doc_id, seed) < held_out * 2.0 ** 64


def split(corpus: Corpus, held_out: float = 0.1, *, seed: int = 0) -> tuple[Corpus, Corpus]:
    """Deterministic train / held-out split by document.

    A document is held out when a 64-bit blake2b hash of ``seed`` and its ``doc_id`` falls below
    ``held_out`` of the hash range, so the assignment depends only on (doc_id, seed, fraction): the
    same on every run and machine, and a document keeps its side when others are added or removed.

    Parameters
    ----------
    corpus : Corpus
    held_out : float in (0, 1), default=0.1
    seed : int, default=0

    Returns
    -------
    (train, held_out) : tuple of Corpus
    """
    if not isinstance(held_out, (int, float)) or not 0.0 < float(held_out) < 1.0:
        raise InputError(f"held_out: expected a fraction strictly between 0 and 1. Got {held_out!r} instead.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer. Got {seed!r} instead.")
    flags = [is_held_out(d.doc_id, held_out, seed=seed) for d in corpus]
    train = corpus._subset((d for d, f in zip(corpus, flags) if not f), ":train")
    held = corpus._subset((d for d, f in zip(corpus, flags) if f), ":heldout")
    for c in (train, held):
        c.manifest["split"] = {"held_out": float(held_out), "seed": int(seed)}
    return train, held


# --------------------------------------------------------------------------------------------
# token counts


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
    corpus._refresh_totals()
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


# --------------------------------------------------------------------------------------------
# local files, folders, hub datasets


_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".tex", ".html", ".htm", ".xml", ".csv", ".json",
                  ".c", ".h", ".cpp", ".js", ".ts", ".java", ".go", ".rs", ".sh", ".yaml", ".yml", ".toml"}


def folder_corpus(path: str | os.PathLike, *, genre: str | None = None, pattern: str = "**/*",
                  suffixes: Iterable[str] | None = None, name: str | None = None) -> Corpus:
    """Every text file under ``path`` matching ``pattern`` as one document.

    ``genre``: the label for all files; ``"subfolder"`` labels each file by its first-level
    subfolder (``root/code/a.py`` -> ``code``); None gives ``"unknown"``.  Files that are not UTF-8
    text, hidden files and files outside ``suffixes`` (default: common text suffixes) are skipped.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; expected a folder of text files")
    allowed = {s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes} if suffixes else _TEXT_SUFFIXES
    src = name or root.name or "folder"
    docs = []
    for p in sorted(root.glob(pattern)):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in allowed:
            continue
        try:
            raw = p.read_bytes()
            if b"\x00" in raw:
                continue
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.strip():
            continue
        if genre == "subfolder":
            g = rel.parts[0] if len(rel.parts) > 1 else "unknown"
        else:
            g = genre or "unknown"
        docs.append(Document(text=text, source=src, genre=g, doc_id=f"{src}:{rel.as_posix()}"))
    if not docs:
        raise InputError(f"{root}: no non-empty UTF-8 text files matching {pattern!r}; expected a folder "
                         f"of text files with suffixes like {sorted(allowed)[:6]}")
    return Corpus(docs, manifest={"sources": [{"source": src, "origin": str(root), "licence": None}]},
                  name=src)


def _rows_from_file(p: Path) -> Iterator[dict]:
    suf = p.suffix.lower()
    if suf == ".jsonl":
        yield from _jsonl_rows(p)
    elif suf == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:  # maybe JSON lines under a .json name
            yield from _jsonl_rows(p)
            return
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if "text" in data and not lists:
                data = [data]
            elif len(lists) == 1:
                data = lists[0]
            else:
                raise InputError(f"{p}: a JSON object without one list of rows; expected a list of "
                                 "objects with a 'text' field")
        if not isinstance(data, list):
            raise InputError(f"{p}: expected a list of objects with a 'text' field")
        yield from data
    elif suf == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(p).to_pylist()
    elif suf == ".txt":
        yield {"text": p.read_text(encoding="utf-8", errors="replace")}
    else:
        raise InputError(f"{p}: unknown file type {suf!r}; expected .jsonl, .json, .parquet or .txt")


def _jsonl_rows(p: Path) -> Iterator[dict]:
    """One JSON object per non-empty line (also the fallback for JSON lines under a .json name)."""
    with p.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise InputError(f"{p}: line {i} is not valid JSON ({e}); expected a JSON list or "
                                     "JSON lines of objects with a 'text' field") from None


def file_corpus(path: str | os.PathLike, *, genre: str | None = None, text_field: str = "text",
                genre_field: str = "genre", id_field: str | None = None, name: str | None = None,
                max_documents: int | None = None) -> Corpus:
    """Documents from a local ``.jsonl`` / ``.json`` / ``.parquet`` file (rows with ``text_field``
    and optionally ``genre_field``) or a ``.txt`` file (one document).

    ``genre`` is used for rows without a genre field (default ``"unknown"``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: no such file; expected a .jsonl, .json, .parquet or .txt file")
    src = name or p.stem
    docs = []
    for i, row in enumerate(_rows_from_file(p)):
        if max_documents is not None and len(docs) >= max_documents:
            break
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise InputError(f"{p}: row {i} has no string field {text_field!r}; expected objects like "
                             f'{{"{text_field}": "...", "{genre_field}": "prose"}}')
        text = row[text_field]
        if not text.strip():
            continue
        g = row.get(genre_field) or genre or "unknown"
        did = f"{src}:{row[id_field]}" if id_field and id_field in row else f"{src}:{i}"
        docs.append(Document(text=text, source=src, genre=str(g), doc_id=did))
    if not docs:
        raise InputError(f"{p}: no non-empty documents; expected rows with a non-empty {text_field!r} field")
    return Corpus(docs, manifest={"sources": [{"source": src, "origin": str(p), "licence": None}]}, name=src)


def hub_corpus(name: str, *, split_name: str = "train", config: str | None = None, genre: str | None = None,
               text_field: str = "text", genre_field: str = "genre", max_documents: int = 10_000) -> Corpus:
    """Stream the first ``max_documents`` rows of a Hugging Face dataset (needs the hub).

    Offline (``HF_HUB_OFFLINE`` set, or the hub not answering within seconds) this fails fast with
    an InputError instead of retrying.
    """
    from featuregeo.io.models import hub_reachable

    if not hub_reachable():
        raise InputError(f"dataset {name!r}: the Hugging Face hub is unreachable (offline); expected "
                         "'builtin' or a local .jsonl/.json/.parquet/.txt file or folder")
    import datasets

    ds = datasets.load_dataset(name, config, split=split_name, streaming=True)
    src = name.rsplit("/", 1)[-1]
    docs = []
    for i, row in enumerate(ds):
        if len(docs) >= max_documents:
            break
        text = row.get(text_field)
        if not isinstance(text, str):
            raise InputError(f"dataset {name!r}: rows have no string field {text_field!r}; expected "
                             f"text_field to name the text column (columns: {sorted(row)})")
        if text.strip():
            docs.append(Document(text=text, source=src, genre=str(row.get(genre_field) or genre or "unknown"),
                                 doc_id=f"{src}:{i}"))
    return Corpus(docs, manifest={"sources": [{"source": src, "origin": f"hf:{name}", "licence": None}]},
                  name=src)


_FILE_SUFFIXES = {".jsonl", ".json", ".parquet", ".txt", ".csv", ".gz"}


def load_corpus(spec: str | os.PathLike = "builtin", *, genre: str | None = None, tokenizer=None,
                **kwargs) -> Corpus:
    """A corpus from ``"builtin"``, a local file, a folder, or ``hf:NAME`` / ``org/name``.

    Extra keyword arguments go to the loader (:func:`builtin_corpus`, :func:`file_corpus`,
    :func:`folder_corpus`, :func:`hub_corpus`).  With ``tokenizer`` the manifest gets token counts.
    """
    s = os.fspath(spec)
    p = Path(s).expanduser()
    if s == "builtin":
        c = builtin_corpus(**kwargs)
    elif p.is_dir():
        c = folder_corpus(p, genre=genre, **kwargs)
    elif p.is_file():
        c = file_corpus(p, genre=genre, **kwargs)
    elif s.startswith("hf:") or (re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", s) and p.suffix.lower() not in _FILE_SUFFIXES
                                 and not p.parent.is_dir()):
        c = hub_corpus(s.removeprefix("hf:"), genre=genre, **kwargs)
    else:
        raise InputError(f"corpus {s!r}: no such file or folder; expected 'builtin', a .jsonl/.json/"
                         ".parquet/.txt file, a folder of text files, or hf:DATASET")
    if tokenizer is not None:
        c.count_tokens(tokenizer)
    return c


# --------------------------------------------------------------------------------------------
# the built-in offline corpus


class MissingSource(Exception):
    """A built-in source whose providing package is not installed."""


@dataclass(frozen=True)
class BuiltinSource:
    name: str
    genre: str
    licence: str
    provider: str  # the package that provides it
    reader: Callable[[], tuple[list[Document], str]]  # -> (documents, origin)


# paths are module attributes so they can be redirected (tests, other distributions)
FORTUNES_DIR = Path("/usr/share/games/fortunes")
GCIDE_FILE = Path("/usr/share/dictd/gcide.dict.dz")
PYDOC_GLOB = "/usr/share/doc/python3*-doc/html/_sources"
PYDOC_PACKAGE = "python3.11-doc"
BIBLE_COMMAND = "bible"
_TEST_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}


def _python_files(root: Path, source: str, genre: str) -> list[Document]:
    docs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _TEST_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            p = Path(dirpath) / fn
            try:
                text = p.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if text.strip():
                docs.append(Document(text=text, source=source, genre=genre,
                                     doc_id=f"{source}:{p.relative_to(root).as_posix()}"))
    return docs


def _read_stdlib() -> tuple[list[Document], str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not (root / "os.py").is_file():
        raise MissingSource(f"the Python standard library source is not at {root}")
    return _python_files(root, "python-stdlib", "code"), str(root)


def _read_sympy() -> tuple[list[Document], str]:
    import importlib.util

    spec = importlib.util.find_spec("sympy")
    if spec is None or not spec.submodule_search_locations:
        raise MissingSource("sympy is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    return _python_files(root, "sympy", "math"), str(root)


def _pydoc_root() -> Path | None:
    for d in sorted(glob.glob(PYDOC_GLOB), reverse=True):
        if Path(d).is_dir():
            return Path(d)
    if shutil.which("dpkg"):  # other layouts: ask dpkg where the package put its reST sources
        try:
            out = subprocess.run(["dpkg", "-L", PYDOC_PACKAGE], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            if line.endswith("/_sources"):
                return Path(line)
    return None


def _read_pydoc() -> tuple[list[Document], str]:
    root = _pydoc_root()
    if root is None:
        raise MissingSource("the Python documentation sources are not installed")
    docs = []
    for p in sorted(root.rglob("*.txt")):
        text = p.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append(Document(text=text, source="python-docs", genre="prose",
                                 doc_id=f"python-docs:{p.relative_to(root).as_posix()}"))
    return docs, str(root)


_VERSE = re.compile(r"^([0-9]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def _read_bible() -> tuple[list[Document], str]:
    exe = shutil.which(BIBLE_COMMAND)
    if exe is None:
        raise MissingSource("the `bible` command is not installed")
    try:
        out = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], capture_output=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise MissingSource(f"`bible -f` failed ({e})") from None
    text = out.stdout.decode("utf-8", errors="replace")
    chapters: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        m = _VERSE.match(line)
        if m:
            chapters.setdefault((m.group(1), m.group(2)), []).append(m.group(4).strip())
        elif line.strip() and chapters:  # a wrapped verse
            chapters[next(reversed(chapters))][-1] += " " + line.strip()
    if not chapters:
        raise MissingSource("`bible -f Gen1:1-Rev22:21` printed no verses")
    docs = [Document(text="\n".join(verses) + "\n", source="bible-kjv", genre="prose",
                     doc_id=f"bible-kjv:{book}{chap}") for (book, chap), verses in chapters.items()]
    return docs, exe


_OVERSTRIKE = re.compile(r".\x08")


def _group(items: Iterable[str], target: int) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for it in items:
        buf.append(it)
        size += len(it) + 1
        if size >= target:
            yield "\n".join(buf)
            buf, size = [], 0
    if buf:
        yield "\n".join(buf)


def _read_fortunes() -> tuple[list[Document], str]:
    root = FORTUNES_DIR
    files = [p for p in sorted(root.glob("*")) if p.is_file() and not p.is_symlink() and not p.suffix] \
        if root.is_dir() else []
    if not files:
        raise MissingSource(f"no fortune files in {root}")
    docs = []
    for p in files:
        text = _OVERSTRIKE.sub("", p.read_bytes().decode("utf-8", errors="replace"))
        quotes = [q.strip("\n") for q in re.split(r"(?m)^%\s*$\n?", text)]
        quotes = [q + "\n" for q in quotes if q.strip()]
        for j, chunk in enumerate(_group(quotes, _DOC_TARGET_BYTES)):
            docs.append(Document(text=chunk, source="fortunes", genre="prose", doc_id=f"fortunes:{p.name}:{j}"))
    return docs, str(root)


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64_int(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def _read_gcide() -> tuple[list[Document], str]:
    path = GCIDE_FILE
    index = path.with_name(path.name.removesuffix(".dict.dz").removesuffix(".dz") + ".index")
    if not path.is_file():
        raise MissingSource(f"{path} is not installed")
    with gzip.open(path, "rb") as fh:  # dictzip files are gzip-compatible
        data = fh.read()
    spans: dict[int, int] = {}  # entry offset -> length, from the dictd index (base64 numbers)
    if index.is_file():
        for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and not parts[0].startswith("00-"):
                try:
                    off, n = _b64_int(parts[1]), _b64_int(parts[2])
                except KeyError:
                    continue
                if 0 <= off < len(data):
                    spans[off] = max(n, spans.get(off, 0))
    if not spans:  # no index: an entry starts at an unindented line after a blank line
        starts = [0] + [m.start() + 2 for m in re.finditer(rb"\n\n(?=\S)", data)] + [len(data)]
        spans = {a: b - a for a, b in zip(starts[:-1], starts[1:])}
    entries = (data[o:o + n].decode("utf-8", errors="replace").strip() for o, n in sorted(spans.items()))
    docs = [Document(text=chunk + "\n", source="gcide", genre="prose", doc_id=f"gcide:{j}")
            for j, chunk in enumerate(_group((e + "\n" for e in entries if e), _DOC_TARGET_BYTES))]
    if not docs:
        raise MissingSource(f"{path} holds no dictionary entries")
    return docs, str(path)


BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    s.name: s
    for s in (
        BuiltinSource("python-stdlib", "code", "PSF-2.0", "the Python standard library (python3.11 source)",
                      _read_stdlib),
        BuiltinSource("sympy", "math", "BSD-3-Clause", "PyPI package sympy (pip install sympy)", _read_sympy),
        BuiltinSource("python-docs", "prose", "PSF-2.0",
                      "Debian package python3.11-doc (apt-get install python3.11-doc)", _read_pydoc),
        BuiltinSource("bible-kjv", "prose", "public domain (King James Version; Debian packaging GPL-2.0+)",
                      "Debian package bible-kjv (apt-get install bible-kjv)", _read_bible),
        BuiltinSource("fortunes", "prose", "BSD-style fortune-mod collection (see /usr/share/doc/fortunes/copyright)",
                      "Debian package fortunes (apt-get install fortunes)", _read_fortunes),
        BuiltinSource("gcide", "prose", "GPL-2.0-or-later (GCIDE, from Webster's 1913 and WordNet)",
                      "Debian package dict-gcide (apt-get install dict-gcide)", _read_gcide),
    )
}


def builtin_corpus(*, sources: Iterable[str] | None = None, genres: Iterable[str] | None = None,
                   tokenizer=None, warn: bool = True) -> Corpus:
    """The built-in offline corpus, read from installed packages at run time.

    Genres: ``code`` (Python standard library, ~12 MB), ``math`` (sympy source and docstrings,
    ~17 MB), ``prose`` (Python documentation reST sources ~11 MB, King James Bible 4.4 MB,
    fortunes ~2.5 MB, GCIDE dictionary ~40 MB).  Code and math: one file per document; the Bible
    one chapter per document; fortunes and dictionary entries grouped into documents of ~4 KB.

    Parameters
    ----------
    sources : iterable of str, optional
        Subset of :data:`BUILTIN_SOURCES` (default: all).  A requested source that is missing raises.
    genres : iterable of str, optional
        Keep only these genres.
    tokenizer : optional
        Count tokens per source into the manifest (cached after the first count).
    warn : bool, default=True
        Warn about missing sources (they are always recorded in ``manifest["missing"]``).

    Raises
    ------
    InputError
        A genre ends up with no documents (the message names the packages to install), or an
        explicitly requested source is missing or unknown.
    """
    explicit = sources is not None
    names = list(BUILTIN_SOURCES) if sources is None else list(sources)
    for n in names:
        if n not in BUILTIN_SOURCES:
            raise InputError(f"sources: unknown built-in source {n!r}; expected some of {list(BUILTIN_SOURCES)}")
    want_genres = None if genres is None else set(genres)
    if want_genres is not None:
        bad = want_genres - set(GENRES)
        if bad:
            raise InputError(f"genres: unknown genre(s) {sorted(bad)}; expected some of {list(GENRES)}")
        names = [n for n in names if BUILTIN_SOURCES[n].genre in want_genres]
    docs: list[Document] = []
    entries: list[dict] = []
    missing: list[dict] = []
    for n in names:
        s = BUILTIN_SOURCES[n]
        try:
            got, origin = s.reader()
        except MissingSource as e:
            msg = f"built-in source {n!r} ({s.genre}) is missing: {e}; install the {s.provider}"
            if explicit:
                raise InputError(msg) from None
            missing.append({"source": n, "genre": s.genre, "provider": s.provider, "reason": str(e)})
            if warn:
                warnings.warn(msg, stacklevel=2)
            continue
        docs.extend(got)
        entries.append({"source": n, "genre": s.genre, "licence": s.licence, "provider": s.provider,
                        "origin": origin, "tokens": None})
    present = {e["genre"] for e in entries if any(d.source == e["source"] for d in docs)}
    for g in sorted({BUILTIN_SOURCES[n].genre for n in names} - present):
        need = [BUILTIN_SOURCES[n].provider for n in names if BUILTIN_SOURCES[n].genre == g]
        raise InputError(f"builtin corpus: genre {g!r} has no documents; expected at least one of: "
                         + "; ".join(need))
    c = Corpus(docs, manifest={"name": "builtin", "sources": entries, "missing": missing}, name="builtin")
    if tokenizer is not None:
        c.count_tokens(tokenizer)
    return c
