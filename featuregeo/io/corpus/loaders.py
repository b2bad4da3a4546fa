"""Corpora from local files, folders and Hugging Face datasets; :func:`load_corpus` dispatches."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from featuregeo.core.errors import InputError
from featuregeo.io.corpus.builtin_sources import builtin_corpus
from featuregeo.io.corpus.documents import Corpus, Document

_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".tex", ".html", ".htm", ".xml", ".csv", ".json",
                  ".c", ".h", ".cpp", ".js", ".ts", ".java", ".go", ".rs", ".sh", ".yaml", ".yml", ".toml"}


def _decode_utf8(p: Path, raw: bytes, where: str = "") -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark is dropped), or a one-line InputError naming ``p``."""
    try:
        return raw.decode("utf-8-sig" if not where else "utf-8")
    except UnicodeDecodeError as e:
        at = f"{where}byte 0x{raw[e.start]:02x} at offset {e.start}"
        raise InputError(f"{p}: not UTF-8 text ({at}); expected a UTF-8 encoded file "
                         "(convert it with e.g. `iconv -t utf-8`)") from None


def folder_corpus(path: str | os.PathLike, *, genre: str | None = None, pattern: str = "**/*",
                  suffixes: Iterable[str] | None = None, name: str | None = None) -> Corpus:
    """Every text file under ``path`` matching ``pattern`` as one document.

    Parameters
    ----------
    path : path
        The folder.
    genre : str, optional
        The label for all files; ``"subfolder"`` labels each file by its first-level subfolder
        (``root/code/a.py`` -> ``code``); None gives ``"unknown"``.
    pattern : str, default="**/*"
        Glob of the files to read, relative to ``path``.
    suffixes : iterable of str, optional
        File suffixes to read (default: common text suffixes such as .txt, .md, .py, .json).
    name : str, optional
        The source name (default: the folder's name).

    Returns
    -------
    Corpus
        Hidden files and files outside ``suffixes`` are ignored.  Files that cannot be used —
        binary (a NUL byte), not UTF-8, unreadable, or with a name that is not valid UTF-8 — are
        **skipped and counted**: ``manifest["skipped"]`` maps the reason to the number of files and
        a warning names the first one, so one stray Latin-1 file does not stop a folder of
        thousands.  (A single-file corpus that is not UTF-8 is an error instead.)
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; expected a folder of text files")
    allowed = {s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes} if suffixes else _TEXT_SUFFIXES
    src = name or root.name or "folder"
    docs = []
    skipped: dict[str, int] = {}
    first_skipped: dict[str, Path] = {}

    def skip(reason: str, p: Path) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        first_skipped.setdefault(reason, p)

    for p in sorted(root.glob(pattern)):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts) or p.suffix.lower() not in allowed:
            continue
        try:
            rel_id = rel.as_posix().encode("utf-8").decode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate-escaped bytes)
            skip("name_not_utf8", p)
            continue
        try:
            raw = p.read_bytes()
        except OSError:
            skip("unreadable", p)
            continue
        if b"\x00" in raw:
            skip("binary", p)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skip("not_utf8", p)
            continue
        if not text.strip():
            continue
        if genre == "subfolder":
            g = rel.parts[0] if len(rel.parts) > 1 else "unknown"
        else:
            g = genre or "unknown"
        docs.append(Document(text=text, source=src, genre=g, doc_id=f"{src}:{rel_id}"))
    if skipped:
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(skipped.items()))
        first = next(iter(first_skipped.values()))
        warnings.warn(f"{root}: skipped {sum(skipped.values())} files that are not usable text ({what}; "
                      f"first: {os.fsencode(first)!r})", stacklevel=2)
    if not docs:
        raise InputError(f"{root}: no non-empty UTF-8 text files matching {pattern!r}; expected a folder "
                         f"of text files with suffixes like {sorted(allowed)[:6]}")
    manifest = {"sources": [{"source": src, "origin": str(root), "licence": None}]}
    if skipped:
        manifest["skipped"] = dict(sorted(skipped.items()))
    return Corpus(docs, manifest=manifest, name=src)


def _rows_from_file(p: Path) -> Iterator[dict]:
    suf = p.suffix.lower()
    if suf == ".jsonl":
        yield from _jsonl_rows(p)
    elif suf == ".json":
        text = _decode_utf8(p, _read_bytes(p))
        try:
            data = json.loads(text)
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

        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{p}: not a readable parquet file ({msg}); expected a parquet table with a "
                             "'text' column") from None
        yield from table.to_pylist()
    elif suf == ".txt":
        yield {"text": _decode_utf8(p, _read_bytes(p))}
    else:
        raise InputError(f"{p}: unknown file type {suf!r}; expected .jsonl, .json, .parquet or .txt")


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputError(f"{p}: cannot read the file ({e.strerror or e}); expected a readable corpus file") from None


def _jsonl_rows(p: Path) -> Iterator[dict]:
    """One JSON object per non-empty line (also the fallback for JSON lines under a .json name)."""
    try:
        fh = p.open("rb")
    except OSError as e:
        raise InputError(f"{p}: cannot read the file ({e.strerror or e}); expected a readable corpus file") from None
    with fh:
        for i, raw in enumerate(fh, 1):
            line = _decode_utf8(p, raw.removeprefix(b"\xef\xbb\xbf") if i == 1 else raw, where=f"line {i}, ")
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


