"""The analysis contract: parameters and results.

Every analysis in :mod:`featuregeo.tl` is a function ::

    analyze(inputs..., params: XParams, *, checkpoint=None, progress=None) -> XResult

``XParams`` derives from :class:`Params` (a frozen dataclass whose ``validate()`` raises a one-line
:class:`~featuregeo.core.errors.InputError` naming the parameter), and ``XResult`` from
:class:`Result`: a dataclass, possibly nested (lists and dicts of other Results, numpy arrays),
that keeps the parameters that produced it next to its values.  Results share one persistence
pair, :meth:`Result.save` / :meth:`Result.load`, plus :meth:`Result.to_dict` and
:meth:`Result.table`.  Plotting, the atlas and the report only ever read Results.

On disk, ``result.save(dir)`` writes

* ``dir/<kind>.json`` — every field; arrays are replaced by ``{"__ndarray__": "<path>"}``;
* ``dir/<kind>.npz`` — the arrays (only when there are any), read back with ``allow_pickle=False``;
* ``dir/<kind>.csv`` — :meth:`Result.table`, for spreadsheets;

each file atomically.  ``XResult.load(dir)`` restores an equal object.
"""

from __future__ import annotations

import dataclasses
import io
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, atomic_write_json, fingerprint, to_jsonable

R = TypeVar("R", bound="Result")
P = TypeVar("P", bound="Params")

_ARRAY_TAG = "__ndarray__"


# ----------------------------------------------------------------------------------------------
# type-directed conversion (dataclass <-> JSON types)
# ----------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    cache = cls.__dict__.get("_fg_hints")
    if cache is None:
        cache = typing.get_type_hints(cls)
        setattr(cls, "_fg_hints", cache)
    return cache


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _encode(value: Any, arrays: dict[str, np.ndarray] | None, path: str) -> Any:
    """Plain JSON types; arrays go to ``arrays`` (when given) or become lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name), arrays, f"{path}.{f.name}" if path else f.name)
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    if isinstance(value, np.ndarray):
        if arrays is None:
            return to_jsonable(value)
        arrays[path] = value
        return {_ARRAY_TAG: path}
    if isinstance(value, dict):
        return {str(k): _encode(v, arrays, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays, f"{path}.{i}") for i, v in enumerate(value)]
    return to_jsonable(value)


def _decode(tp: Any, value: Any, arrays: Any) -> Any:
    if value is None:
        # JSON has no NaN: a plain float field stored as null was NaN; an Optional field stays None
        return float("nan") if tp is float else None
    if isinstance(value, dict) and _ARRAY_TAG in value:
        if arrays is None:
            raise InputError(f"result: array {value[_ARRAY_TAG]!r} is stored outside the JSON; expected the .npz beside it")
        return np.asarray(arrays[value[_ARRAY_TAG]])
    tp = _strip_optional(tp)
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"result: expected an object for {tp.__name__}. Got {type(value).__name__} instead.")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value and f.init:
                kwargs[f.name] = _decode(hints.get(f.name, Any), value[f.name], arrays)
        return tp(**kwargs)
    if tp is np.ndarray:
        return np.asarray(value)
    if origin in (list, typing.List) or tp is list:
        sub = args[0] if args else Any
        return [_decode(sub, v, arrays) for v in value]
    if origin in (tuple, typing.Tuple) or tp is tuple:
        if args and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, arrays) for v in value)
        if args:
            return tuple(_decode(a, v, arrays) for a, v in zip(args, value))
        return tuple(value)
    if origin in (dict, typing.Dict) or tp is dict:
        kt, vt = (args + (Any, Any))[:2] if args else (Any, Any)
        conv = int if kt is int else (lambda k: k)
        return {conv(k): _decode(vt, v, arrays) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------------
# Params
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Params:
    """Base class for the tuning parameters of one analysis (a frozen dataclass).

    Subclasses override :meth:`validate` to raise a one-line :class:`InputError` naming the
    parameter, what is allowed, and the value given ("Got X instead.").  Analyses call it first,
    before any expensive work.
    """

    def validate(self: P) -> P:
        """Check every field; return ``self`` so calls can be chained."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return _encode(self, None, "")

    @classmethod
    def from_dict(cls: type[P], d: dict[str, Any]) -> P:
        """Build from a dict; unknown keys are ignored (old files keep loading)."""
        return _decode(cls, dict(d), None)

    def replace(self: P, **changes: Any) -> P:
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        return fingerprint(type(self).__name__, self.to_dict())


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> None:
    """Raise an :class:`InputError` unless ``value`` is an integer in ``[minimum, maximum]``."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        rng = ("an integer" if minimum is None else f"an integer >= {minimum}") + (
            "" if maximum is None else f" and <= {maximum}")
        raise InputError(f"{name}: expected {rng}{' or None' if allow_none else ''}. Got {value!r} instead.")


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> None:
    """Raise an :class:`InputError` unless ``value`` is a finite number inside the given bounds."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        bounds = " and ".join(x for x in (lo, hi) if x)
        raise InputError(f"{name}: expected a finite number{' ' + bounds if bounds else ''}. Got {value!r} instead.")


def check_bool(name: str, value: Any) -> None:
    """Raise an :class:`InputError` unless ``value`` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}: expected True or False. Got {value!r} instead.")


def check_choice(name: str, value: Any, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(map(str, choices))}. Got {value!r} instead.")


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """Base class for analysis results: a (nested) dataclass with one persistence pair.

    Subclasses set ``kind`` (the file stem) and may override :meth:`rows` (the records behind
    :meth:`table`).  Fields whose names start with ``_`` are never saved.
    """

    kind: ClassVar[str] = "result"

    # -- plain data ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON types (arrays as lists, NaN as None)."""
        return _encode(self, None, "")

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """Inverse of :meth:`to_dict` (arrays come back as numpy arrays when the field says so)."""
        d = {k: v for k, v in d.items() if k != "kind"}
        return _decode(cls, d, None)

    # -- tables -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """The records behind :meth:`table`: by default one per item of the first list-of-Result
        field (e.g. one per layer), else one for the result itself; scalar fields only, nested
        scalar dataclasses flattened as ``outer.inner``."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list) and v and all(isinstance(x, Result) for x in v):
                return [_flat(x) for x in v]
        return [_flat(self)]

    def table(self):
        """:meth:`rows` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows())

    # -- files --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``<kind>.json`` (+ ``.npz`` for arrays, + ``.csv`` table) into ``directory``, atomically.

        Returns the path of the JSON file.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: expected a directory to save the {self.kind} result in; it is a file")
        arrays: dict[str, np.ndarray] = {}
        doc = {"kind": self.kind, **_encode(self, arrays, "")}
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
            atomic_write_bytes(directory / f"{self.kind}.npz", buf.getvalue())
        rows = self.rows()
        if rows:
            import csv

            cols: list[str] = []
            for r in rows:
                cols += [c for c in r if c not in cols]
            sio = io.StringIO()
            w = csv.DictWriter(sio, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
            atomic_write_bytes(directory / f"{self.kind}.csv", sio.getvalue().encode())
        return atomic_write_json(directory / f"{self.kind}.json", doc)

    @classmethod
    def load(cls: type[R], directory: str | Path) -> R:
        """Read a result written by :meth:`save` (``directory`` or its ``<kind>.json``)."""
        directory = Path(directory)
        path = directory if directory.suffix == ".json" else directory / f"{cls.kind}.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: no {cls.kind} result here; expected a directory written by featuregeo "
                             f"({cls.kind}.json)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable {cls.kind} result ({e}); expected JSON written by featuregeo") from None
        if not isinstance(doc, dict) or doc.get("kind", cls.kind) != cls.kind:
            got = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise InputError(f"{path}: expected a {cls.kind} result. Got {got!r} instead.")
        doc.pop("kind", None)
        npz = path.with_suffix(".npz")
        try:
            if npz.exists():
                with np.load(npz, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                return _decode(cls, doc, arrays)
            return _decode(cls, doc, None)
        except (TypeError, KeyError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{path}: a damaged or incompatible {cls.kind} result ({type(e).__name__}: {e}); "
                             "expected one written by this version of featuregeo") from None


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name.startswith("_"):
            continue
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (list, tuple)) and len(v) <= 4 and all(isinstance(x, (int, float, str, type(None), np.number)) for x in v):
            out[key] = to_jsonable(list(v)) if v else None
            if out[key] is not None:
                out[key] = ";".join("" if x is None else str(x) for x in out[key])
        elif isinstance(v, (int, float, str, bool, np.number, np.bool_)) or v is None:
            out[key] = to_jsonable(v)
    return out
