"""Result objects: the parameters that produced a result stored next to its values.

Every analysis returns a dataclass deriving from :class:`Result`.  ``to_dict()`` gives plain JSON
types (NaN -> null); ``save(path)`` writes JSON atomically; ``load(path)`` restores the object.
Plotting and export only read these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ._util import atomic_write_json, to_jsonable

R = TypeVar("R", bound="Result")


@dataclasses.dataclass
class Result:
    """Base class for analysis results (a dataclass with JSON round-trip)."""

    kind: ClassVar[str] = "result"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Result):
                v = v.to_dict()
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], Result):
                v = [x.to_dict() for x in v]
            out[f.name] = v
        return to_jsonable(out)

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        kwargs = {}
        hints = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in hints.items():
            if name not in d:
                continue
            v = d[name]
            sub = _result_type(f.type)
            if sub is not None and isinstance(v, dict):
                v = sub.from_dict(v)
            elif sub is not None and isinstance(v, list):
                v = [sub.from_dict(x) for x in v]
            kwargs[name] = v
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, {"kind": self.kind, **self.to_dict()})

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        d = json.loads(Path(path).read_text())
        d.pop("kind", None)
        return cls.from_dict(d)


_REGISTRY: dict[str, type[Result]] = {}


def register(cls: type[R]) -> type[R]:
    """Class decorator making a Result type resolvable by name in nested ``from_dict``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _result_type(annotation: Any) -> type[Result] | None:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for name, cls in _REGISTRY.items():
        if text in (name, f"{name} | None", f"list[{name}]", f"{name} | None".replace(" ", "")):
            return cls
    return None
