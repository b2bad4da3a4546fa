"""Per-feature text labels: CSV / JSON tables and Neuronpedia's bulk explanation exports, read offline.

Formats (chosen by file name):

* ``.csv`` / ``.tsv`` — a header with an id column (``feature``, ``feature_id``, ``id`` or ``index``)
  and a label column (``label``, ``description`` or ``explanation``); an optional ``layer`` column
  restricts a row to one layer.
* ``.json`` — an object ``{"<id>": "<label>", ...}``, or a list of records with the same columns
  as the CSV.
* ``.jsonl`` / ``.jsonl.gz`` — Neuronpedia's public exports (``explanations/batch-N.jsonl.gz``): one
  object per line with ``modelId``, ``layer`` (the source id, e.g. ``12-gemmascope-res-16k``),
  ``index`` and ``description``.  Rows are matched to an SAE through its Neuronpedia id
  ``"<modelId>/<layer>"`` (sae-lens metadata ``neuronpedia_id``).  A directory is read as all the
  ``*.jsonl.gz`` / ``*.jsonl`` files in it.

The first label seen for a feature wins (files in the order given, lines in file order).

>>> labels = LabelSources(["explanations/"])                       # doctest: +SKIP
>>> labels.for_layer(12, "gemma-2-2b/12-gemmascope-res-16k")[1234]  # doctest: +SKIP
'references to the Eiffel tower'
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import quote

from featuregeo.core.errors import InputError

NEURONPEDIA_URL = "https://www.neuronpedia.org"
ID_COLUMNS = ("feature", "feature_id", "id", "index")
LABEL_COLUMNS = ("label", "description", "explanation")


def neuronpedia_url(neuronpedia_id: str | None, index: int) -> str | None:
    """``https://www.neuronpedia.org/<model>/<source>/<index>`` or None when the id is unknown."""
    if not neuronpedia_id or "/" not in neuronpedia_id:
        return None
    return f"{NEURONPEDIA_URL}/{quote(neuronpedia_id.strip('/'), safe='/')}/{int(index)}"


def _as_id(value, where: str) -> int:
    try:
        v = int(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: expected an integer feature id. Got {value!r} instead.") from None
    if v < 0:
        raise InputError(f"{where}: expected a non-negative feature id. Got {v} instead.")
    return v


def _pick(columns: Iterable[str], wanted: tuple[str, ...], path: Path, what: str) -> str:
    cols = {c.strip().lower(): c for c in columns if c is not None}
    for w in wanted:
        if w in cols:
            return cols[w]
    raise InputError(f"{path}: no {what} column; expected one of {list(wanted)}. Got columns {sorted(cols)} instead.")


def _table_rows(rows: list[Mapping], path: Path) -> dict[int | None, dict[int, str]]:
    """{layer or None: {id: label}} from dict rows with id/label/(layer) columns."""
    out: dict[int | None, dict[int, str]] = {}
    if not rows:
        return out
    cols = list(rows[0].keys())
    idc = _pick(cols, ID_COLUMNS, path, "feature id")
    lc = _pick(cols, LABEL_COLUMNS, path, "label")
    layc = next((c for c in cols if c is not None and c.strip().lower() == "layer"), None)
    for i, r in enumerate(rows):
        where = f"{path} row {i + 1}"
        layer_v = r.get(layc) if layc else None
        layer = None if layer_v in (None, "") else _as_id(layer_v, f"{where} layer")
        label = r.get(lc)
        if label is None:
            continue
        out.setdefault(layer, {}).setdefault(_as_id(r.get(idc), where), str(label))
    return out


def read_label_table(path: str | Path) -> dict[int | None, dict[int, str]]:
    """Read a CSV/TSV/JSON label table -> ``{layer or None (every layer): {feature id: label}}``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels: {path} does not exist; expected a CSV/JSON label file or Neuronpedia export")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".tsv")):
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ","))
            return _table_rows(rows, path)
        if name.endswith(".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return {None: {_as_id(k, f"{path} key"): str(v) for k, v in data.items() if v is not None}}
            if isinstance(data, list) and all(isinstance(x, dict) for x in data):
                return _table_rows(data, path)
            raise InputError(f"{path}: expected a JSON object {{id: label}} or a list of records. "
                             f"Got {type(data).__name__} instead.")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0][:120]}); expected "
                         "a UTF-8 CSV/JSON label table") from None
    raise InputError(f"--labels: {path} has an unknown format; expected .csv, .tsv, .json, .jsonl or .jsonl.gz")


def _neuronpedia_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.jsonl.gz"), *path.glob("*.jsonl")],
                       key=lambda p: (len(p.name), p.name))  # batch-2 before batch-10
        if not files:
            raise InputError(f"--labels: {path} holds no *.jsonl.gz or *.jsonl files; expected Neuronpedia exports")
        return files
    if not path.is_file():
        raise InputError(f"--labels: {path} does not exist; expected a CSV/JSON label file or Neuronpedia export")
    return [path]


def read_neuronpedia(path: str | Path, wanted: Iterable[str] | None = None) -> dict[str, dict[int, str]]:
    """Read Neuronpedia explanation exports -> ``{"<modelId>/<layer>": {index: description}}``.

    Parameters
    ----------
    path : path
        A ``batch-N.jsonl.gz`` / ``.jsonl`` file or a directory of them.
    wanted : iterable of str, optional
        Neuronpedia ids to keep (default: all).  Other rows are skipped without being stored.
    """
    out: dict[str, dict[int, str]] = {}
    for f in _neuronpedia_files(Path(path)):
        for key, labels in _read_export(f, wanted)[0].items():
            dst = out.setdefault(key, {})
            for k, v in labels.items():
                dst.setdefault(k, v)
    return out


def _read_export(f: Path, wanted: Iterable[str] | None) -> tuple[dict[str, dict[int, str]], set[str]]:
    """One export file -> (labels of the wanted ids, every id present in the file)."""
    keep = None if wanted is None else {w.strip("/") for w in wanted if w}
    out: dict[str, dict[int, str]] = {}
    present: set[str] = set()
    opener = gzip.open if f.name.endswith(".gz") else open
    try:
        with opener(f, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key = f"{rec['modelId']}/{rec['layer']}"
                    index, desc = rec["index"], rec.get("description")
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise InputError(f"{f} line {n}: expected a JSON object with modelId, layer, index and "
                                     "description (a Neuronpedia explanations export)") from None
                present.add(key)
                if (keep is not None and key not in keep) or desc is None:
                    continue
                out.setdefault(key, {}).setdefault(_as_id(index, f"{f} line {n} index"), str(desc))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"{f}: cannot read ({type(e).__name__}); expected a gzip-compressed JSONL "
                         "Neuronpedia export") from None
    return out, present


def _is_neuronpedia(path: Path) -> bool:
    return path.is_dir() or path.name.lower().endswith((".jsonl", ".jsonl.gz"))


class LabelSources:
    """Label files given on the command line, read once and matched per layer.

    Parameters
    ----------
    paths : iterable of path
        CSV/TSV/JSON tables and Neuronpedia exports (files or directories), in priority order.

    Notes
    -----
    Each Neuronpedia export file is read once per Neuronpedia id asked for, and never again for ids
    it is known not to contain (exports usually hold one SAE each), so a suite reads each file about once.
    """

    def __init__(self, paths: Iterable[str | Path] = ()):
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.exists():
                raise InputError(f"--labels: {p} does not exist; expected a CSV/JSON label file or Neuronpedia export")
        self._tables: dict[Path, dict] = {}
        self._files: dict[Path, list[Path]] = {p: _neuronpedia_files(p) for p in self.paths if _is_neuronpedia(p)}
        self._present: dict[Path, set[str]] = {}  # export file -> ids it holds (after a first read)
        self._np: dict[tuple[Path, str], dict[int, str]] = {}

    def _export_labels(self, f: Path, key: str) -> dict[int, str]:
        if (f, key) not in self._np:
            if f in self._present and key not in self._present[f]:
                return {}
            got, present = _read_export(f, [key])
            self._present[f] = present
            self._np[(f, key)] = got.get(key, {})
        return self._np[(f, key)]

    def for_layer(self, layer: int | None, neuronpedia_id: str | None = None) -> dict[int, str]:
        """``{feature id: label}`` for one layer: table rows for this layer or every layer, and
        Neuronpedia rows whose ``modelId/layer`` equals ``neuronpedia_id``."""
        out: dict[int, str] = {}
        for p in self.paths:
            if p in self._files:
                if not neuronpedia_id:
                    continue
                got: dict[int, str] = {}
                for f in self._files[p]:
                    for k, v in self._export_labels(f, neuronpedia_id.strip("/")).items():
                        got.setdefault(k, v)
            else:
                if p not in self._tables:
                    self._tables[p] = read_label_table(p)
                t = self._tables[p]
                got = {**t.get(None, {}), **(t.get(layer, {}) if layer is not None else {})}
            for k, v in got.items():
                out.setdefault(k, v)
        return out


__all__ = ["LabelSources", "read_label_table", "read_neuronpedia", "neuronpedia_url", "NEURONPEDIA_URL"]
