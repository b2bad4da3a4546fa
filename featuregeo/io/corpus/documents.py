"""Documents, corpora and the deterministic train / held-out split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from featuregeo.core.errors import InputError

GENRES = ("code", "math", "prose")



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
        self._fp: str | None = None
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
        for k in ("tokenizer", "skipped"):
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
            return self.subset(self._docs[i])
        return self._docs[i]

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs)

    def __repr__(self) -> str:
        g = ", ".join(f"{k}: {v['documents']} docs / {v['bytes'] / 1e6:.1f} MB"
                      for k, v in self.manifest["genres"].items())
        return f"Corpus({self.name!r}, {len(self)} documents; {g})"

    def subset(self, docs: Iterable[Document], suffix: str = "") -> "Corpus":
        """A corpus of ``docs`` (taken from this one) keeping this manifest's source details."""
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
        return self.subset((d for d in self._docs if d.genre == genre), f"[{genre}]")

    def filter(self, predicate: Callable[[Document], bool]) -> "Corpus":
        return self.subset(d for d in self._docs if predicate(d))

    def interleaved(self) -> "Corpus":
        """The same documents in round-robin order over genres, and within a genre over sources (each
        source keeping its own order), so that any prefix — a ``max_blocks`` limit — is balanced."""
        per_genre = []
        for g in sorted({d.genre for d in self._docs}):
            docs = [d for d in self._docs if d.genre == g]
            per_genre.append(_round_robin([[d for d in docs if d.source == s] for s in sorted({d.source for d in docs})]))
        return self.subset(_round_robin(per_genre))

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
        for d in sorted(self._docs, key=lambda d: doc_hash(d.doc_id, seed)):
            n = len(d.text.encode("utf-8"))
            if max_bytes_per_genre is not None and used_g.get(d.genre, 0) >= max_bytes_per_genre:
                continue
            if max_bytes_per_source is not None and used_s.get(d.source, 0) >= max_bytes_per_source:
                continue
            keep.add(d.doc_id)
            used_g[d.genre] = used_g.get(d.genre, 0) + n
            used_s[d.source] = used_s.get(d.source, 0) + n
        return self.subset(d for d in self._docs if d.doc_id in keep)

    def count_tokens(self, tokenizer, *, use_cache: bool = True) -> "Corpus":
        """Fill the manifest's ``tokens`` per source (cached per source content and tokenizer)."""
        from featuregeo.io.corpus.tokens import count_tokens

        count_tokens(self, tokenizer, use_cache=use_cache)
        return self

    def fingerprint(self) -> str:
        """A hash of the documents in order (id, source, genre, text): the corpus's identity.

        Two corpora with the same fingerprint yield the same blocks; a harvest records it so that a
        resumed harvest never mixes shards from different text.  Computed once per object (about
        0.2 s for the 90 MB built-in corpus).
        """
        if self._fp is None:
            h = hashlib.blake2b(digest_size=16)
            for d in self._docs:
                for part in (d.doc_id, d.source, d.genre, d.text):
                    h.update(part.encode("utf-8", "surrogatepass"))
                    h.update(b"\x00")
                h.update(b"\x01")
            self._fp = h.hexdigest()
        return self._fp

    def refresh_totals(self) -> None:
        """Recompute the per-genre totals of the manifest after its sources changed."""
        self._refresh_totals()

def _round_robin(groups: list[list]) -> list:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def doc_hash(doc_id: str, seed: int) -> int:
    """The 64-bit blake2b hash of ``seed`` and ``doc_id`` behind :func:`split` and :meth:`Corpus.limit`."""
    h = hashlib.blake2b(f"{int(seed)}\x00{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big")


def is_held_out(doc_id: str, held_out: float = 0.1, *, seed: int = 0) -> bool:
    """Whether ``doc_id`` falls in the held-out part (blake2b of seed and id; stable everywhere)."""
    return doc_hash(doc_id, seed) < held_out * 2.0 ** 64


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
    train = corpus.subset((d for d, f in zip(corpus, flags) if not f), ":train")
    held = corpus.subset((d for d, f in zip(corpus, flags) if f), ":heldout")
    for c in (train, held):
        c.manifest["split"] = {"held_out": float(held_out), "seed": int(seed)}
    return train, held


