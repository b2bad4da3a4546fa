"""The analyses, one module (or sub-package) each, all following one contract.

``featuregeo.tl.<name>.analyze(inputs..., <Name>Params(...), *, checkpoint=None, progress=None)``
returns a ``<Name>Result`` (see :mod:`featuregeo.core.results`).  Analyses take typed inputs (a
``Suite``, a ``LoadedModel``, a ``Harvest``), never source strings, and never import plotting, the
pipeline or the CLI.

- :mod:`featuregeo.tl.galaxy` — covariance spectrum, power law, clustering entropy, nulls
- :mod:`featuregeo.tl.lobes` — co-occurrence, affinities, spectral lobes, spatial statistics
- :mod:`featuregeo.tl.atoms` — function vectors, LDA on held-out pairs, crystals
- :mod:`featuregeo.tl.layers` — cross-layer similarity, feature matching, the pruning check

Submodules load on first attribute access (``featuregeo.tl.galaxy``).
"""

from __future__ import annotations

import importlib

ANALYSES = ("galaxy", "lobes", "atoms", "layers", "lens", "updates", "interaction")


def __getattr__(name: str):
    if name in ANALYSES:
        return importlib.import_module(f"featuregeo.tl.{name}")
    raise AttributeError(f"module 'featuregeo.tl' has no attribute {name!r}")
