"""featuregeo: the geometry of sparse-autoencoder features.

Load SAE decoder directions as point clouds (:func:`open_suite`, :func:`load_cloud`) and analyse them
with one contract (:mod:`featuregeo.tl`): ``tl.<name>.analyze(inputs, <Name>Params(...), *,
checkpoint=None, progress=None) -> <Name>Result``, for ``galaxy`` (spectrum, power law, clustering
entropy), ``lobes`` (functional lobes from co-firing), ``atoms`` (function vectors and crystals) and
``layers`` (cross-layer comparison).  :mod:`featuregeo.pipeline` runs each one from source strings to
saved results and figures; :mod:`featuregeo.atlas` exports a browsable map.

Names below are resolved lazily, so ``import featuregeo`` never imports torch, sae_lens or matplotlib.

Examples
--------
>>> import featuregeo as fg                                            # doctest: +SKIP
>>> suite = fg.open_suite("default", [3, 9])                          # doctest: +SKIP
>>> res = fg.tl.galaxy.analyze(suite, fg.tl.galaxy.GalaxyParams())    # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    # core
    "FeatureCloud": "featuregeo.core.data",
    "Suite": "featuregeo.core.data",
    "Provenance": "featuregeo.core.data",
    "InputError": "featuregeo.core.errors",
    "Params": "featuregeo.core.results",
    "Result": "featuregeo.core.results",
    "Checkpoint": "featuregeo.core.checkpoint",
    # io
    "open_suite": "featuregeo.io",
    "load_cloud": "featuregeo.io",
    "load_model": "featuregeo.io.models",
    "residual_stream": "featuregeo.io.models",
    "load_corpus": "featuregeo.io.corpus",
    "builtin_corpus": "featuregeo.io.corpus",
    "Harvest": "featuregeo.io.harvest",
    "HarvestParams": "featuregeo.io.harvest",
    "harvest": "featuregeo.io.harvest",
    "load_tasks": "featuregeo.io.pairs",
    # analyses: parameters and results (the functions are tl.<name>.analyze)
    "GalaxyParams": "featuregeo.tl.galaxy",
    "GalaxyResult": "featuregeo.tl.galaxy",
    "LobesParams": "featuregeo.tl.lobes",
    "LobesResult": "featuregeo.tl.lobes",
    "AtomsParams": "featuregeo.tl.atoms",
    "CrystalParams": "featuregeo.tl.atoms",
    "AtomsResult": "featuregeo.tl.atoms",
    "LayersParams": "featuregeo.tl.layers",
    "LayersResult": "featuregeo.tl.layers",
    "AtlasParams": "featuregeo.atlas",
    "AtlasResult": "featuregeo.atlas",
}
_SUBPACKAGES = ("core", "io", "tl", "pl", "atlas", "pipeline")

__all__ = sorted(_LAZY) + list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"featuregeo.{name}")
    raise AttributeError(f"module 'featuregeo' has no attribute {name!r}")


def __dir__():
    return __all__
