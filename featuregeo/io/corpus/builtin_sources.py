"""The built-in offline corpus, assembled at run time from installed packages.

The paths below are module attributes so that tests and other distributions can redirect them.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import shutil
import subprocess
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from featuregeo.core.errors import InputError
from featuregeo.io.corpus.documents import GENRES, Corpus, Document

_DOC_TARGET_BYTES = 4096  # fortunes and dictionary entries are grouped into documents of ~4 KB



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
