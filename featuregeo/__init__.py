"""featuregeo: the geometry of sparse-autoencoder features.

Load SAE decoder directions as point clouds (:func:`open_suite`, :func:`load_cloud`), analyse their
shape at galaxy scale (:mod:`featuregeo.tl.galaxy`), find functional lobes from co-firing
(:mod:`featuregeo.tl.lobes`), function vectors and crystals (:mod:`featuregeo.tl.atoms`), compare layers
(:mod:`featuregeo.tl.layers`), and export a browsable atlas (:mod:`featuregeo.atlas.build`).

Heavy libraries (torch, sae_lens, transformers, matplotlib) are imported only when used; names
below are resolved lazily so ``import featuregeo`` is fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "FeatureCloud": "featuregeo.core.data",
    "Suite": "featuregeo.core.data",
    "Provenance": "featuregeo.core.data",
    "InputError": "featuregeo.core.errors",
    "open_suite": "featuregeo.io",
    "load_cloud": "featuregeo.io",
    "GalaxyParams": "featuregeo.tl.galaxy",
    "analyze_layer": "featuregeo.tl.galaxy",
    "run_galaxy": "featuregeo.tl.galaxy",
    "clustering_entropy": "featuregeo.tl.galaxy",
    "fit_power_law": "featuregeo.tl.galaxy",
    "load_model": "featuregeo.io.models",
    "residual_stream": "featuregeo.io.models",
    "load_corpus": "featuregeo.io.corpus",
    "builtin_corpus": "featuregeo.io.corpus",
    "Harvest": "featuregeo.io.harvest",
    "harvest": "featuregeo.io.harvest",
    "run_lobes": "featuregeo.tl.lobes",
    "lobes_from_harvest": "featuregeo.tl.lobes",
    "LobeResult": "featuregeo.tl.lobes",
    "load_tasks": "featuregeo.io.pairs",
    "analyze_pairs": "featuregeo.tl.atoms",
    "find_crystals": "featuregeo.tl.atoms",
    "run_atoms": "featuregeo.tl.atoms",
    "linear_cka": "featuregeo.tl.layers",
    "match_features": "featuregeo.tl.layers",
    "run_layers": "featuregeo.tl.layers",
    "run_atlas": "featuregeo.atlas.build",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featuregeo' has no attribute {name!r}")


def __dir__():
    return __all__
