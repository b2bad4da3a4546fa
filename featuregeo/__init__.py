"""featuregeo: the geometry of sparse-autoencoder features.

Load SAE decoder directions as point clouds (:func:`open_suite`, :func:`load_cloud`), analyse their
shape at galaxy scale (:mod:`featuregeo.galaxy`), find functional lobes from co-firing
(:mod:`featuregeo.lobes`), function vectors and crystals (:mod:`featuregeo.atoms`), compare layers
(:mod:`featuregeo.layers`), and export a browsable atlas (:mod:`featuregeo.atlas`).

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
    "harvest": "featuregeo.harvest",
    "run_lobes": "featuregeo.lobes",
    "lobes_from_harvest": "featuregeo.lobes",
    "LobeResult": "featuregeo.lobes",
    "load_tasks": "featuregeo.pairs",
    "analyze_pairs": "featuregeo.atoms",
    "find_crystals": "featuregeo.atoms",
    "run_atoms": "featuregeo.atoms",
    "linear_cka": "featuregeo.layers",
    "match_features": "featuregeo.layers",
    "run_layers": "featuregeo.layers",
    "run_atlas": "featuregeo.atlas",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featuregeo' has no attribute {name!r}")


def __dir__():
    return __all__
