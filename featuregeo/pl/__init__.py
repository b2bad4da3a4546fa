"""Figures, one module per analysis; each function reads a Result and writes a PNG (never computes science).

Submodules load on first attribute access (``featuregeo.pl.galaxy``).
"""

from __future__ import annotations

import importlib

MODULES = ("base", "galaxy", "lobes", "atoms", "layers", "lens", "updates", "interaction")


def __getattr__(name: str):
    if name in MODULES:
        return importlib.import_module(f"featuregeo.pl.{name}")
    raise AttributeError(f"module 'featuregeo.pl' has no attribute {name!r}")
