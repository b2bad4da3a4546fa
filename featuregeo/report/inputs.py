"""Finding and loading the results a report reads (through each Result class's ``load``).

A results directory is a demo output (``galaxy/``, ``harvest/``, ``lobes/``, ``atoms/``, ``layers/``,
``atlas/``, maybe ``lens/``, ``updates/``, ``interaction/``) or any directory holding those result
folders, or a single result folder (``galaxy.json`` directly inside).  For each analysis the first
match wins: ``DIR/<kind>.json``, then ``DIR/<name>/<kind>.json``, then any ``DIR/*/<kind>.json`` in
name order.  A result that cannot be read is reported, not fatal.
"""

from __future__ import annotations

import csv
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featuregeo.core.errors import InputError

#: analysis -> (module with the Result class, class name); the file is ``<kind>.json`` with kind = analysis
ANALYSES = {
    "galaxy": ("featuregeo.tl.galaxy", "GalaxyResult"),
    "lobes": ("featuregeo.tl.lobes", "LobesResult"),
    "atoms": ("featuregeo.tl.atoms", "AtomsResult"),
    "layers": ("featuregeo.tl.layers", "LayersResult"),
    "lens": ("featuregeo.tl.lens", "LensResult"),
    "updates": ("featuregeo.tl.updates", "UpdatesResult"),
    "interaction": ("featuregeo.tl.interaction", "InteractionResult"),
}

#: file names of a robustness table (in the results directory or its ``robustness/`` folder)
ROBUSTNESS_FILES = ("robustness.csv", "robustness/robustness.csv")


@dataclass
class RobustnessRow:
    """One row of a robustness table: a claim's headline number for one SAE / run."""

    claim: str
    source: str
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass
class ResultSet:
    """The results found in one directory."""

    root: Path
    results: dict[str, Any] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    robustness: list[RobustnessRow] = field(default_factory=list)

    def get(self, name: str) -> Any:
        """The loaded result of ``name`` (None when absent or unreadable)."""
        return self.results.get(name)

    def dir(self, name: str) -> Path:
        """Where ``name`` was (or would be) read from."""
        return self.dirs.get(name, self.root / name)


def result_class(name: str):
    """The Result class of analysis ``name``."""
    module, cls = ANALYSES[name]
    return getattr(importlib.import_module(module), cls)


def locate(root: Path, name: str) -> Path | None:
    """The directory holding ``<name>.json`` for ``root`` (see the module docstring), or None."""
    kind = name
    if (root / f"{kind}.json").is_file():
        return root
    if (root / name / f"{kind}.json").is_file():
        return root / name
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / f"{kind}.json").is_file():
            return sub
    return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_robustness(root: Path) -> list[RobustnessRow]:
    """Rows of ``robustness.csv`` (columns ``claim``, ``source``, ``value``, optional ``low``, ``high``).

    A table without those columns is an InputError naming the file.
    """
    for rel in ROBUSTNESS_FILES:
        path = root / rel
        if not path.is_file():
            continue
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"{path}: not a readable CSV ({e}); expected columns claim,source,value[,low,high]") from None
        if rows and not {"claim", "source", "value"} <= set(rows[0]):
            raise InputError(f"{path}: expected columns claim,source,value[,low,high]. Got {sorted(rows[0])} instead.")
        return [RobustnessRow(str(r["claim"]), str(r["source"]), _float(r["value"]), _float(r.get("low")),
                              _float(r.get("high"))) for r in rows]
    return []


def check_dir(root: str | Path) -> Path:
    """``root`` as a Path, or a one-line InputError when it is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"RESULTS_DIR {root}: {'not a directory' if root.exists() else 'does not exist'}; expected a "
                         "directory written by featuregeo (e.g. a demo output)")
    return root


def load_results(root: str | Path) -> ResultSet:
    """Every result found under ``root`` (InputError when ``root`` is not a directory)."""
    root = check_dir(root)
    rs = ResultSet(root=root)
    for name in ANALYSES:
        where = locate(root, name)
        if where is None:
            continue
        rs.dirs[name] = where
        try:
            rs.results[name] = result_class(name).load(where)
        except InputError as e:
            rs.unreadable[name] = str(e)
    rs.robustness = read_robustness(root)
    return rs


__all__ = ["ANALYSES", "ROBUSTNESS_FILES", "RobustnessRow", "ResultSet", "result_class", "locate", "load_results",
           "read_robustness", "check_dir"]
