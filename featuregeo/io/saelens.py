"""sae-lens SAEs: saved folders (``SAE.load_from_disk``) and pretrained releases (``SAE.from_pretrained``).

This is the only featuregeo module that imports ``sae_lens``, ``torch`` or ``huggingface_hub``, and
it does so inside functions: importing featuregeo stays fast.

Offline behaviour of pretrained releases
---------------------------------------
sae-lens downloads through ``huggingface_hub``, which -- without a network -- retries for ~20 s per
file before failing.  Before calling sae-lens, :func:`load_pretrained_cloud` therefore checks
whether the hub is reachable (one TCP connection with a short timeout, remembered for a few
minutes).  When it is not, or when ``HF_HUB_OFFLINE`` is set, the call runs in offline mode: a
pre-filled Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``) loads as usual, and a missing file
fails at once with an :class:`~featuregeo.core.errors.InputError` naming the release, the SAE id, the
repository and the files that are missing.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import json
import re
import socket
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from featuregeo.core.data import ArrayRows, FeatureCloud, Provenance
from featuregeo.core.errors import InputError

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
#: seconds to wait for a TCP connection to the hub before treating it as unreachable
PROBE_TIMEOUT = 2.0
#: seconds a probe result is remembered
PROBE_TTL = 300.0
#: files each sae-lens converter reads from ``{repo}/{folder}/`` (for "missing file" messages)
_CONVERTER_FILES = {
    None: (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME),
    "sae_lens": (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME),
    "gemma_2": ("params.npz",),
}
_HOW_TO_GET = ("run once with internet access to download it, or pre-fill the Hugging Face cache "
               "(set HF_HUB_CACHE or HF_HOME to a cache that holds it)")

_probe_cache: dict[tuple[str, int], tuple[float, bool]] = {}


# ------------------------------------------------------------------------------------------------
# helpers without heavy imports
# ------------------------------------------------------------------------------------------------
def is_saelens_folder(path: str | Path) -> bool:
    """True if ``path`` is a folder holding ``cfg.json`` and ``sae_weights.safetensors``."""
    p = Path(path)
    return (p / SAE_CFG_FILENAME).is_file() and (p / SAE_WEIGHTS_FILENAME).is_file()


def layer_from_hook_name(hook_name: Any) -> int | None:
    """The layer in a TransformerLens hook name such as ``blocks.12.hook_resid_post``, else None."""
    if not isinstance(hook_name, str):
        return None
    m = re.search(r"(?:^|\.)blocks\.(\d+)\.", hook_name) or re.search(r"(?:^|\.)layers?\.(\d+)(?:\.|$)", hook_name)
    return int(m.group(1)) if m else None


def read_folder_cfg(path: str | Path) -> dict:
    """The parsed ``cfg.json`` of a sae-lens folder (``{}`` if missing or unreadable)."""
    try:
        cfg = json.loads((Path(path) / SAE_CFG_FILENAME).read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def folder_layer_hint(path: str | Path) -> int | None:
    """The layer a sae-lens folder's ``cfg.json`` names (hook name or ``hook_layer``), read as JSON only."""
    cfg = read_folder_cfg(path)
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    for hook in (meta.get("hook_name"), cfg.get("hook_name"), cfg.get("hook_point")):
        layer = layer_from_hook_name(hook)
        if layer is not None:
            return layer
    for v in (meta.get("hook_layer"), cfg.get("hook_layer"), cfg.get("hook_point_layer")):
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _one_line(e: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(e).split())
    msg = msg[:limit] + "..." if len(msg) > limit else msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _import_sae_class(what: str):
    try:
        from sae_lens import SAE
    except ImportError as e:  # pragma: no cover - sae-lens is a dependency
        raise InputError(f"{what}: sae-lens is not installed ({e}); expected `pip install sae-lens`") from None
    return SAE


# ------------------------------------------------------------------------------------------------
# SAE -> FeatureCloud
# ------------------------------------------------------------------------------------------------
def _cloud_from_sae(sae: Any, *, layer: int | None, where: str, prov: dict, exclude_dead: bool,
                    orientation: str) -> FeatureCloud:
    w = getattr(sae, "W_dec", None)
    if w is None or w.ndim != 2:
        shape = None if w is None else list(w.shape)
        raise InputError(f"{where}: the SAE has no 2-D decoder W_dec (got {shape}); expected W_dec [d_sae, d_in]")
    w = w.detach().cpu()
    stored = str(w.dtype).replace("torch.", "")
    if stored not in ("float16", "float32", "float64"):
        w = w.float()
    arr = w.numpy()
    transpose = orientation == "columns"  # sae-lens stores W_dec as [d_sae, d_in]: rows are features
    cfg = sae.cfg
    meta = getattr(cfg, "metadata", None)

    def meta_get(name: str) -> Any:
        return None if meta is None else getattr(meta, name, None)

    hook_name = prov.pop("hook_name", None) or meta_get("hook_name")
    if layer is None:
        layer = layer_from_hook_name(hook_name)
    try:
        architecture = cfg.architecture()
    except Exception:  # noqa: BLE001 - architecture() is informative only
        architecture = None
    provenance = Provenance(
        source=where,
        model_name=prov.pop("model_name", None) or meta_get("model_name"),
        hook_name=hook_name,
        neuronpedia_id=prov.pop("neuronpedia_id", None) or meta_get("neuronpedia_id"),
        width=int(getattr(cfg, "d_sae", arr.shape[0])),
        decoder_key="W_dec",
        transposed=transpose,
        stored_dtype=stored,
        architecture=architecture,
        **prov,
    )
    return FeatureCloud(ArrayRows(arr, transpose=transpose), layer, provenance, exclude_dead=exclude_dead)


def load_folder_cloud(path: str | Path, *, layer: int | None = None, source: str | None = None,
                      exclude_dead: bool = True, orientation: str = "auto") -> FeatureCloud:
    """Load the decoder of a sae-lens folder written by ``SAE.save_model`` (``SAE.load_from_disk``).

    Parameters
    ----------
    path : str or Path
        Folder holding ``cfg.json`` and ``sae_weights.safetensors``.
    layer : int, optional
        The layer; defaults to the one in the config's hook name.
    source : str, optional
        Recorded as ``provenance.source`` (default: the path).
    exclude_dead : bool, default=True
        Passed to :class:`~featuregeo.core.data.FeatureCloud`.
    orientation : {"auto", "rows", "columns"}, default="auto"
        sae-lens stores features as rows; only ``"columns"`` transposes.
    """
    path = Path(path)
    where = source or str(path)
    if not is_saelens_folder(path):
        raise InputError(f"{path}: not a sae-lens folder; expected {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME} in it")
    SAE = _import_sae_class(where)
    try:
        sae = SAE.load_from_disk(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - any failure here means the folder is unusable
        raise InputError(
            f"{path}: could not load the sae-lens folder ({_one_line(e)}); expected {SAE_CFG_FILENAME} + "
            f"{SAE_WEIGHTS_FILENAME} as written by SAE.save_model"
        ) from None
    return _cloud_from_sae(sae, layer=layer, where=where, exclude_dead=exclude_dead, orientation=orientation,
                           prov={"path": str(path.resolve())})


# ------------------------------------------------------------------------------------------------
# the pretrained directory
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Release:
    """One release of sae-lens' pretrained directory (the fields featuregeo uses)."""

    release: str
    repo_id: str
    model: str
    conversion_func: str | None
    saes_map: dict[str, str]
    expected_l0: dict[str, float]
    neuronpedia_id: dict[str, str | None]


@functools.lru_cache(maxsize=1)
def pretrained_directory() -> Mapping[str, Any]:
    """sae-lens' directory of pretrained releases (``release -> Release``), parsed once.

    The catalogue is read from the ``pretrained_saes.yaml`` that sae-lens ships, without importing
    sae-lens itself (whose import takes 5-15 s), so listing layers and failing on a missing cache
    are quick.  If the file is not where it is expected, sae-lens' own parser is used.
    """
    spec = importlib.util.find_spec("sae_lens")
    if spec is None:
        raise InputError("saelens: sae-lens is not installed; expected `pip install sae-lens`")
    yaml_path = Path(next(iter(spec.submodule_search_locations or []), "")) / "pretrained_saes.yaml"
    try:
        import yaml

        with open(yaml_path) as fh:
            data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        out = {}
        for name, value in data.items():
            saes = value["saes"]
            out[name] = Release(
                release=name,
                repo_id=value["repo_id"],
                model=value["model"],
                conversion_func=value.get("conversion_func"),
                saes_map={s["id"]: str(s["path"]) for s in saes},
                expected_l0={s["id"]: s.get("l0", 0.0) for s in saes},
                neuronpedia_id={s["id"]: s.get("neuronpedia") for s in saes},
            )
        return out
    except (OSError, ImportError, KeyError, TypeError, AttributeError, ValueError):
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        return get_pretrained_saes_directory()


def _choices(wanted: str, options: list[str], n: int = 6) -> list[str]:
    close = difflib.get_close_matches(wanted, options, n=n, cutoff=0.5)
    return close or options[:n]


def lookup_release(release: str, source: str) -> Any | None:
    """The directory entry of ``release``; None for a Hugging Face ``org/repo`` not in the directory.

    Raises
    ------
    InputError
        Unknown release (lists close matches).
    """
    directory = pretrained_directory()
    if release in directory:
        return directory[release]
    if "/" in release:
        return None
    raise InputError(
        f"{source}: unknown sae-lens release {release!r}; expected one of the {len(directory)} releases in "
        f"sae-lens' pretrained directory, e.g. {_choices(release, sorted(directory))}"
    )


def check_sae_id(lookup: Any, sae_id: str, source: str) -> None:
    """Raise an InputError listing close valid ids if ``sae_id`` is not in the release."""
    if lookup is not None and sae_id not in lookup.saes_map:
        ids = list(lookup.saes_map)
        raise InputError(
            f"{source}: unknown SAE id {sae_id!r} in release {lookup.release!r}; expected one of its "
            f"{len(ids)} ids, e.g. {_choices(sae_id, ids)}"
        )


# ------------------------------------------------------------------------------------------------
# hub connectivity
# ------------------------------------------------------------------------------------------------
def _probe_target() -> tuple[str, int]:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else "http://" + proxy)
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == "https" else 80)
    return host, port


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint (or its proxy) opens within ``timeout``.

    DNS resolution is included in the timeout (the probe runs in a daemon thread).  Results are
    remembered for :data:`PROBE_TTL` seconds per endpoint.
    """
    target = _probe_target()
    now = time.monotonic()
    hit = _probe_cache.get(target)
    if hit is not None and now - hit[0] < PROBE_TTL:
        return hit[1]
    result = [False]

    def probe() -> None:
        try:
            with socket.create_connection(target, timeout=timeout):
                result[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True, name="featuregeo-hub-probe")
    t.start()
    t.join(timeout + 0.25)
    _probe_cache[target] = (time.monotonic(), result[0])
    return result[0]


@contextlib.contextmanager
def _hub_offline(enable: bool) -> Iterator[None]:
    """Temporarily put huggingface_hub into offline mode (no network calls, no retries)."""
    if not enable:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _missing_files(repo_id: str, folder: str, conversion: str | None, exc: BaseException | None) -> list[str]:
    """Files of ``repo_id/folder`` the converter needs that are not in the cache (may be empty)."""
    from huggingface_hub import try_to_load_from_cache

    names = _CONVERTER_FILES.get(conversion)
    if names:
        wanted = [f"{folder}/{n}" if folder not in ("", ".") else n for n in names]
        missing = [f for f in wanted if not isinstance(try_to_load_from_cache(repo_id, f), str)]
        if missing or exc is None:
            return missing
    # otherwise the URL of the failed request names the file
    for e in (exc, getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        m = re.search(r"/resolve/[^/\s]+/(\S+?)(?::|\s|$)", str(e or ""))
        if m:
            return [m.group(1)]
    return []


def fetch_pretrained_sae(release: str, sae_id: str) -> tuple[Any, dict]:
    """``SAE.from_pretrained(release, sae_id, device="cpu")`` with featuregeo's offline handling.

    Returns the sae-lens SAE and the provenance fields known from the pretrained directory.
    Raises InputError for an unknown release/id, or (within seconds) when the SAE is neither cached
    nor downloadable.
    """
    source = f"saelens:{release}:{sae_id}"
    lookup = lookup_release(release, source)
    check_sae_id(lookup, sae_id, source)
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    repo_id = lookup.repo_id if lookup is not None else release
    folder = lookup.saes_map[sae_id] if lookup is not None else sae_id
    conversion = lookup.conversion_func if lookup is not None else None
    offline_env = bool(constants.HF_HUB_OFFLINE)
    unreachable = not offline_env and not hub_reachable()

    def not_cached(missing: list[str]) -> InputError:
        why = "HF_HUB_OFFLINE is set" if offline_env else f"the hub ({constants.ENDPOINT}) is not reachable"
        return InputError(
            f"{source}: the SAE is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; missing "
            f"repo {repo_id!r} file(s) {missing}; expected a cached copy: {_HOW_TO_GET}"
        )

    if (offline_env or unreachable) and lookup is not None and conversion in _CONVERTER_FILES:
        missing = _missing_files(repo_id, folder, conversion, None)
        if missing:  # known file layout: fail before the slow sae-lens import
            raise not_cached(missing)
    SAE = _import_sae_class(source)
    try:
        with _hub_offline(unreachable), warnings.catch_warnings():
            # sae-lens advises how to load the language model; irrelevant for decoder geometry
            warnings.filterwarnings("ignore", message=r"(?s).*model_from_pretrained_kwargs")
            sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise not_cached(_missing_files(repo_id, folder, conversion, e) or [f"{folder}/..."]) from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - report any loader failure as bad input, in one line
        hint = " (working offline: the cache may be incomplete)" if (offline_env or unreachable) else ""
        raise InputError(
            f"{source}: sae-lens could not load the SAE ({_one_line(e)}){hint}; expected a loadable release/id "
            f"(see sae_lens.loading.pretrained_saes_directory)"
        ) from None
    prov: dict[str, Any] = {"release": release, "sae_id": sae_id}
    if lookup is not None:
        prov["model_name"] = lookup.model
        prov["neuronpedia_id"] = lookup.neuronpedia_id.get(sae_id)
        l0 = lookup.expected_l0.get(sae_id)
        if isinstance(l0, (int, float)) and l0 > 0:
            prov["l0"] = float(l0)
    return sae, prov


def load_pretrained_cloud(release: str, sae_id: str, *, layer: int | None = None, exclude_dead: bool = True,
                          orientation: str = "auto") -> FeatureCloud:
    """Load one pretrained SAE with ``SAE.from_pretrained(release, sae_id, device="cpu")``.

    Parameters
    ----------
    release : str
        A release of sae-lens' pretrained directory (or a Hugging Face ``org/repo``).
    sae_id : str
        An SAE id of that release.
    layer : int, optional
        The layer; defaults to the one in the id or the SAE's hook name.
    exclude_dead : bool, default=True
        Passed to :class:`~featuregeo.core.data.FeatureCloud`.
    orientation : {"auto", "rows", "columns"}, default="auto"
        sae-lens stores features as rows; only ``"columns"`` transposes.

    Raises
    ------
    InputError
        Unknown release or id; the SAE is not cached and the hub is offline or unreachable (names
        the repository and files, and how to get them); any other loading failure.
    """
    sae, prov = fetch_pretrained_sae(release, sae_id)
    source = f"saelens:{release}:{sae_id}"
    return _cloud_from_sae(sae, layer=layer, where=source, exclude_dead=exclude_dead, orientation=orientation,
                           prov=prov)


def load_sae(cloud: FeatureCloud) -> Any:
    """The sae-lens SAE (encoder and decoder) behind a cloud loaded from a sae-lens source.

    Works for clouds from sae-lens folders (including ``default``) and pretrained releases; a bare
    decoder file has no encoder, which is an InputError.
    """
    prov = cloud.provenance
    if prov.release and prov.sae_id:
        return fetch_pretrained_sae(prov.release, prov.sae_id)[0]
    if prov.path and is_saelens_folder(prov.path):
        SAE = _import_sae_class(prov.source)
        try:
            return SAE.load_from_disk(str(prov.path), device="cpu")
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{prov.path}: could not load the sae-lens folder ({_one_line(e)}); expected "
                             f"{SAE_CFG_FILENAME} + {SAE_WEIGHTS_FILENAME} as written by SAE.save_model") from None
    raise InputError(f"{prov.source}: a bare decoder has no encoder; expected a sae-lens source (a sae-lens "
                     "folder, 'saelens:RELEASE:SAE_ID' or 'default') to compute feature activations")


__all__ = ["is_saelens_folder", "load_sae", "fetch_pretrained_sae", "layer_from_hook_name", "folder_layer_hint", "read_folder_cfg",
           "load_folder_cloud", "pretrained_directory", "lookup_release", "check_sae_id",
           "hub_reachable", "load_pretrained_cloud", "PROBE_TIMEOUT"]
