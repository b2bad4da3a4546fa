"""featuregeo: the geometry of sparse-autoencoder features.

Load SAE decoder directions as point clouds (:func:`open_suite`, :func:`load_cloud`), analyse their
shape at galaxy scale (:mod:`featuregeo.galaxy`), and write figures and tables.

Heavy libraries (torch, sae_lens, transformers, matplotlib) are imported only when used; names
below are resolved lazily so ``import featuregeo`` is fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "FeatureCloud": "featuregeo.data",
    "Suite": "featuregeo.data",
    "Provenance": "featuregeo.data",
    "InputError": "featuregeo.errors",
    "open_suite": "featuregeo.io",
    "load_cloud": "featuregeo.io",
    "GalaxyParams": "featuregeo.galaxy",
    "analyze_layer": "featuregeo.galaxy",
    "run_galaxy": "featuregeo.galaxy",
    "clustering_entropy": "featuregeo.galaxy",
    "fit_power_law": "featuregeo.galaxy",
    "load_model": "featuregeo.models",
    "residual_stream": "featuregeo.models",
    "load_corpus": "featuregeo.corpus",
    "builtin_corpus": "featuregeo.corpus",
    "Harvest": "featuregeo.harvest",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featuregeo' has no attribute {name!r}")


def __dir__():
    return __all__
