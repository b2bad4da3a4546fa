"""Loading SAE decoders from one source-string syntax.

>>> from featuregeo.io import open_suite, load_cloud          # doctest: +SKIP
>>> suite = open_suite("saelens:gemma-scope-2b-pt-res-canonical:layer_{layer}/width_16k/canonical")
>>> cloud = suite.load(12)                                     # reads layer 12 only
>>> cloud = load_cloud("runs/sae_L6/sae_weights.safetensors")  # one decoder file

Sources: ``saelens:RELEASE:SAE_ID`` (``{layer}`` in the id makes a suite), a sae-lens folder, a
``.safetensors``/``.npy``/``.npz``/``.pt``/``.pth`` file, a directory / glob / ``{layer}`` path
template of those, and ``default`` / ``default:LAYER``.  See :mod:`featuregeo.io.sources`.

Only :mod:`featuregeo.io.saelens` (and ``.pt`` reading) imports torch, sae-lens or
huggingface_hub, lazily, inside functions.
"""

from __future__ import annotations

from featuregeo.io.sources import DEFAULT_SUITE_DIR, load_cloud, open_suite, layer_from_name

__all__ = ["open_suite", "load_cloud", "layer_from_name", "DEFAULT_SUITE_DIR"]
