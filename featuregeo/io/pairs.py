"""Relation-pair tasks (word pairs sharing one relation) for function vectors and analogies.

Built-in tasks are assembled offline from installed packages: the Google analogy set shipped with
gensim (``questions-words.txt``), ``countryinfo`` (country -> capital, demonym) and ``lemminflect``
(verb lemma -> past tense).  User tasks come from CSV files (``input,output[,task]``) or JSON in the
function-vector format of Todd et al. (a list of ``{"input": ..., "output": ...}``).

Every :class:`PairTask` records where its pairs came from, how many it has and how many duplicates
were removed.  :func:`split_pairs` assigns each pair to train or test by a hash of the pair and a
seed, so a pair's side does not depend on the order or the other pairs of a task.

>>> from featuregeo.io.pairs import load_tasks, split_pairs     # doctest: +SKIP
>>> tasks = load_tasks(["male-female", "country-capital"])
>>> train, test = split_pairs(tasks[0], test_fraction=0.3, seed=0)
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from featuregeo.core.errors import InputError

GOOGLE = "gensim:questions-words.txt"


@dataclass(frozen=True)
class PairTask:
    """One relation: ordered pairs ``(input, output)``.

    Attributes
    ----------
    name : str
    pairs : tuple of (str, str), unique, in first-seen order
    source : str, where the pairs came from
    n_duplicates : int, duplicate pairs removed (and pairs whose two words are equal)
    """

    name: str
    pairs: tuple[tuple[str, str], ...]
    source: str
    n_duplicates: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n_pairs": self.n_pairs,
                "n_duplicates": self.n_duplicates, "notes": list(self.notes)}


def make_task(name: str, pairs: Iterable[Sequence[str]], source: str) -> PairTask:
    """A :class:`PairTask` from raw pairs: whitespace stripped, duplicates and self-pairs removed and counted."""
    seen: dict[tuple[str, str], None] = {}
    dup = 0
    for i, p in enumerate(pairs):
        if len(p) != 2:
            raise InputError(f"{source}: pair {i} of task {name!r} has {len(p)} fields; expected (input, output)")
        a, b = str(p[0]).strip(), str(p[1]).strip()
        if not a or not b:
            raise InputError(f"{source}: pair {i} of task {name!r} has an empty word; expected two non-empty words")
        if a == b or (a, b) in seen:
            dup += 1
            continue
        seen[(a, b)] = None
    return PairTask(name=name, pairs=tuple(seen), source=source, n_duplicates=dup)


# --------------------------------------------------------------------------------------------
# built-in tasks


@lru_cache(maxsize=1)
def _google_sections() -> dict[str, list[tuple[str, str]]]:
    """Section -> pairs (both halves of every question) of the Google analogy set."""
    try:
        from gensim.test.utils import datapath
    except ImportError:
        raise InputError("tasks: the built-in tasks need gensim (the Google analogy set); expected "
                         "`pip install gensim`") from None
    out: dict[str, list[tuple[str, str]]] = {}
    section = None
    with open(datapath("questions-words.txt"), encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if line.startswith(":"):
                section = line[1:].strip()
                out.setdefault(section, [])
                continue
            w = line.split()
            if len(w) == 4 and section is not None:
                out[section] += [(w[0], w[1]), (w[2], w[3])]
    # every pair recurs in many questions by construction: keep each once (first-seen order)
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def _google(*sections: str) -> list[tuple[str, str]]:
    s = _google_sections()
    return [p for name in sections for p in s[name]]


def _countries() -> list:
    try:
        import countryinfo
    except ImportError:
        raise InputError("tasks: country tasks need countryinfo; expected `pip install countryinfo`") from None
    return list(countryinfo.all_countries())


def _country_capital() -> tuple[list, str]:
    g = [(country, capital) for capital, country in _google("capital-common-countries", "capital-world")]
    ci = [(c.name(), c.capital()) for c in _countries() if c.name() and c.capital()]
    return g + ci, f"{GOOGLE}[capital-common-countries,capital-world]+countryinfo"


def _nationality() -> tuple[list, str]:
    ci = [(c.name(), c.demonym()) for c in _countries() if c.name() and c.demonym()]
    return _google("gram6-nationality-adjective") + ci, f"{GOOGLE}[gram6-nationality-adjective]+countryinfo"


def _present_past() -> tuple[list, str]:
    try:
        from lemminflect import getLemma
    except ImportError:
        raise InputError("tasks: present-past needs lemminflect; expected `pip install lemminflect`") from None
    out = []
    for participle, past in _google("gram7-past-tense"):
        lemma = getLemma(participle, upos="VERB")
        if lemma:
            out.append((lemma[0], past))
    return out, f"{GOOGLE}[gram7-past-tense] with lemmas from lemminflect"


def _section(name: str, swap: bool = False) -> Callable[[], tuple[list, str]]:
    def build() -> tuple[list, str]:
        pairs = _google(name)
        return ([(b, a) for a, b in pairs] if swap else pairs), f"{GOOGLE}[{name}]"

    return build


#: task name -> builder returning (pairs, source)
BUILTIN_TASKS: dict[str, Callable[[], tuple[list, str]]] = {
    "country-capital": _country_capital,
    "currency": _section("currency"),
    "nationality": _nationality,
    "male-female": _section("family"),
    "singular-plural": _section("gram8-plural"),
    "present-past": _present_past,
    "comparative": _section("gram3-comparative"),
    "superlative": _section("gram4-superlative"),
    "opposite": _section("gram2-opposite"),
}


def builtin_task(name: str) -> PairTask:
    """One built-in task by name (see :data:`BUILTIN_TASKS`)."""
    if name not in BUILTIN_TASKS:
        raise InputError(f"tasks: unknown task {name!r}; valid names are {sorted(BUILTIN_TASKS)}")
    pairs, source = BUILTIN_TASKS[name]()
    return make_task(name, pairs, source)


# --------------------------------------------------------------------------------------------
# user files


def read_pair_file(path: str | Path) -> list[PairTask]:
    """Tasks from a CSV (``input,output`` or ``input,output,task``; header optional) or a JSON file.

    JSON: a list of ``{"input": ..., "output": ...}`` (Todd et al.; the task is named after the
    file), or an object ``{task_name: [ {...}, ... ]}``.  CSV rows without a task column belong to a
    task named after the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--pairs {p}: no such file; expected a .csv or .json file of word pairs")
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise InputError(f"--pairs {p}: cannot be read ({e.strerror}); expected a readable .csv or .json file") from None
    stem = p.stem
    groups: dict[str, list] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"--pairs {p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                             "expected a UTF-8 encoded JSON file") from None
        except ValueError as e:
            raise InputError(f"--pairs {p}: not valid JSON ({e}); expected a list of "
                             '{"input": ..., "output": ...}') from None
        items = data.items() if isinstance(data, dict) else [(stem, data)]
        for name, rows in items:
            if not isinstance(rows, list):
                raise InputError(f"--pairs {p}: task {name!r} is not a list; expected a list of "
                                 '{"input": ..., "output": ...}')
            for i, r in enumerate(rows):
                if not isinstance(r, dict) or not {"input", "output"} <= set(r):
                    raise InputError(f"--pairs {p}: item {i} of {name!r} lacks 'input'/'output'; expected "
                                     '{"input": ..., "output": ...}')
                out = r["output"][0] if isinstance(r["output"], list) and r["output"] else r["output"]
                groups.setdefault(str(name), []).append((str(r["input"]), str(out)))
    elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
        delim = "\t" if p.suffix.lower() == ".tsv" else ","
        try:
            with open(p, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.reader(fh, delimiter=delim) if r and any(c.strip() for c in r)]
        except UnicodeDecodeError as e:
            raise InputError(f"--pairs {p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                             "expected a UTF-8 encoded file of input,output rows") from None
        except csv.Error as e:
            raise InputError(f"--pairs {p}: not a readable CSV file ({e}); expected input,output[,task] rows") from None
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["input", "output"]:
            rows = rows[1:]
        for i, r in enumerate(rows):
            if len(r) not in (2, 3):
                raise InputError(f"--pairs {p}: row {i + 1} has {len(r)} columns; expected input,output[,task]")
            name = r[2].strip() if len(r) == 3 and r[2].strip() else stem
            groups.setdefault(name, []).append((r[0], r[1]))
    else:
        raise InputError(f"--pairs {p}: unknown extension {p.suffix!r}; expected .csv, .tsv or .json")
    if not groups:
        raise InputError(f"--pairs {p}: no pairs; expected at least one input,output row")
    return [make_task(name, pairs, str(p)) for name, pairs in groups.items()]


def load_tasks(names: Sequence[str] | str | None = None, files: Sequence[str | Path] = ()) -> list[PairTask]:
    """Built-in tasks (all when ``names`` is None; ``[]`` for none) plus tasks from pair files.

    ``names`` may be a comma-separated string.  Tasks of the same name from several sources are an
    error (rename one).
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(BUILTIN_TASKS) if names is None else list(names)
    unknown = [n for n in names if n not in BUILTIN_TASKS]
    if unknown:
        raise InputError(f"--tasks: unknown task(s) {unknown}; valid names are {sorted(BUILTIN_TASKS)}")
    tasks = [builtin_task(n) for n in dict.fromkeys(names)]
    for f in files:
        tasks += read_pair_file(f)
    seen: set[str] = set()
    for t in tasks:
        if t.name in seen:
            raise InputError(f"tasks: task {t.name!r} is defined twice (last by {t.source}); expected unique names")
        seen.add(t.name)
    if not tasks:
        raise InputError("tasks: no tasks selected; expected --tasks names and/or --pairs files")
    return tasks


# --------------------------------------------------------------------------------------------
# split


def pair_fraction(pair: tuple[str, str], seed: int = 0) -> float:
    """A number in [0, 1) from a hash of the pair and the seed (stable across runs and platforms)."""
    h = hashlib.blake2b(f"{int(seed)}\x1f{pair[0]}\x1f{pair[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def split_pairs(task: PairTask, test_fraction: float = 0.3, seed: int = 0
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and test pairs of a task, decided pair by pair by :func:`pair_fraction`.

    A pair's side depends only on the pair and the seed.  Tasks that would get no train or no test
    pair get the pair with the smallest (or largest) hash moved over, so both sides are non-empty
    whenever the task has two pairs or more.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction: expected a number in (0, 1). Got {test_fraction!r} instead.")
    scored = sorted(task.pairs, key=lambda p: pair_fraction(p, seed))
    test = [p for p in scored if pair_fraction(p, seed) < test_fraction]
    train = [p for p in scored if pair_fraction(p, seed) >= test_fraction]
    if len(scored) >= 2 and not test:
        test, train = train[:1], train[1:]
    if len(scored) >= 2 and not train:
        train, test = test[-1:], test[:-1]
    return train, test


__all__ = [
    "BUILTIN_TASKS",
    "PairTask",
    "builtin_task",
    "load_tasks",
    "make_task",
    "pair_fraction",
    "read_pair_file",
    "split_pairs",
]
