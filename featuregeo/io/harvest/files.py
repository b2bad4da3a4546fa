"""The files of a harvest directory: deterministic shard bytes, atomic writes, and a checked manifest."""

from __future__ import annotations

import errno
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, check_output_path
from featuregeo.io.harvest.params import HarvestError

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
MANIFEST = "harvest.json"
SHARD_RE = re.compile(r"shard_(\d{6})\.npz")


def shard_name(i: int) -> str:
    """File name of shard ``i`` (``shard_000003.npz``)."""
    return f"shard_{i:06d}.npz"


def npy_bytes(a: np.ndarray) -> bytes:
    """The ``.npy`` bytes of an array (no pickles)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed .npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, npy_bytes(arrays[name]))
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Write atomically; a full disk becomes a :class:`HarvestError` saying finished shards are intact."""
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HarvestError(f"{path.parent}: disk full while writing {path.name}; finished shards are intact — "
                               "free space and rerun the same command to resume") from None
        raise


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a path where a harvest directory can be (or is): nothing is created.

    Raises a one-line InputError when ``out`` or one of its parents is a file.
    """
    return check_output_path(out, what="a directory for the harvest")


# ----------------------------------------------------------------------------------------------
# the manifest, checked field by field
# ----------------------------------------------------------------------------------------------
def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _is_int(v: Any, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expect(mp: Path, where: str, ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise InputError(f"{mp}: {where} should be {what}. Got {_short(value)} instead; the harvest manifest is "
                         "damaged — rerun the harvest into a new --out")


_CONFIG_FIELDS = (
    ("layers", _is_int_list, "a list of layer numbers"),
    ("sae_layers", _is_int_list, "a list of layer numbers"),
    ("block_len", lambda v: _is_int(v, 1), "an integer >= 1"),
    ("threshold", _is_number, "a number"),
    ("saes", lambda v: isinstance(v, dict), "an object (layer -> SAE facts)"),
)


def read_manifest(directory: str | Path) -> dict:
    """Read and check ``DIR/harvest.json``; every problem is a one-line InputError naming the file.

    Returns
    -------
    dict
        The manifest (``format``, ``fingerprint``, ``config``, ``d_model``, ``activation_scale``,
        ``complete``, and when complete ``n_blocks`` and ``n_shards``).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: expected a harvest directory; it is a file")
    mp = directory / MANIFEST
    if not mp.is_file():
        raise InputError(f"{directory}: no {MANIFEST}; expected a directory written by featuregeo's harvest")
    try:
        m = json.loads(mp.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{mp}: not valid JSON ({str(e).splitlines()[0]}); expected the manifest written by "
                         "featuregeo's harvest — rerun the harvest into a new --out") from None
    except OSError as e:
        raise InputError(f"{mp}: cannot read the file ({e.strerror or e}); expected a readable harvest manifest") from None
    _expect(mp, "the file", isinstance(m, dict), "a JSON object", type(m).__name__)
    _expect(mp, "'format'", m.get("format") in READABLE_FORMATS, f"one of {list(READABLE_FORMATS)}", m.get("format"))
    _expect(mp, "'fingerprint'", isinstance(m.get("fingerprint"), str), "a string", m.get("fingerprint"))
    cfg = m.get("config")
    _expect(mp, "'config'", isinstance(cfg, dict), "an object", cfg)
    for key, ok, what in _CONFIG_FIELDS:
        _expect(mp, f"'config.{key}'", ok(cfg.get(key)), what, cfg.get(key))
    extra = sorted(set(cfg["sae_layers"]) - set(cfg["layers"]))
    _expect(mp, "'config.sae_layers'", not extra, f"a subset of config.layers {cfg['layers']}", cfg["sae_layers"])
    _expect(mp, "'d_model'", _is_int(m.get("d_model"), 1), "an integer >= 1", m.get("d_model"))
    scales = m.get("activation_scale", {})
    _expect(mp, "'activation_scale'", isinstance(scales, dict) and all(_is_number(v) for v in scales.values()),
            "an object of layer -> number", scales)
    _expect(mp, "'complete'", isinstance(m.get("complete"), bool), "true or false", m.get("complete"))
    if m["complete"]:
        for key in ("n_blocks", "n_shards"):
            _expect(mp, f"'{key}'", _is_int(m.get(key)), "an integer >= 0", m.get(key))
    return m


def finished_shards(directory: Path, manifest: dict) -> list[Path]:
    """The shard files of a harvest, checked to be consecutive (and all present when it is complete)."""
    shards_dir = directory / "shards"
    found = sorted(p for p in shards_dir.glob("shard_*.npz") if SHARD_RE.fullmatch(p.name)) if shards_dir.is_dir() \
        else []
    for i, p in enumerate(found):
        if p.name != shard_name(i):
            raise InputError(f"{shards_dir}: {shard_name(i)} is missing (found {p.name} after it); expected "
                             "consecutive shards — rerun the same harvest command to refill it")
    if manifest.get("complete") and len(found) != manifest["n_shards"]:
        raise InputError(f"{shards_dir}: {MANIFEST} records {manifest['n_shards']} finished shards but {len(found)} "
                         "are present; expected all of them — rerun the same harvest command to rebuild the missing ones")
    return found
