"""One atomic, fingerprinted checkpoint for every resumable step.

A :class:`Checkpoint` is a directory of finished *units* of work (a layer, a pruning evaluation,
a cached activation array).  Each unit is a sub-directory ``<key>/`` holding its files and a
``fingerprint`` file.  A unit is reused only when its stored fingerprint equals the one the
caller computes now from *everything* that determines it: the analysis parameters, the identity
and content of the source (:meth:`featuregeo.core.data.FeatureCloud.fingerprint`), the model, the
seed.  A stale unit (other inputs) is recomputed and replaced, never returned.

Units are written into a private temporary directory and renamed into place, so an interrupted
run leaves either the old unit, the new unit, or none — never half of one.  While a checkpoint is
open it holds an exclusive lock on ``<dir>/.lock``; a second process writing the same output
directory is refused with a one-line :class:`~featuregeo.core.errors.InputError`.

Example
-------
>>> ck = Checkpoint(out / ".checkpoint")                        # doctest: +SKIP
>>> rec = ck.result(f"layer_{L}", fp, lambda: analyze_one(L), GalaxyLayer)   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_bytes, atomic_write_text, fingerprint

T = TypeVar("T")

_FP_FILE = "fingerprint"


def _check_key(key: str) -> str:
    if not key or "/" in key or "\\" in key or key.startswith("."):
        raise ValueError(f"checkpoint key: expected a plain name like 'layer_3'. Got {key!r} instead.")
    return key


class Checkpoint:
    """Finished units of work under ``directory``, each tagged with the fingerprint of its inputs.

    Parameters
    ----------
    directory : path
        Created if missing.  Must not be a file (or lie under one).
    lock : bool, default=True
        Take an exclusive advisory lock for the lifetime of the object (released by :meth:`close`,
        on garbage collection, or at process exit).
    """

    def __init__(self, directory: str | os.PathLike, *, lock: bool = True):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InputError(f"{self.directory}: expected a directory for results; a file is in the way") from None
        except PermissionError:
            raise InputError(f"{self.directory}: no permission to write results here") from None
        self._lock_fh = None
        if lock:
            self._acquire()
        self.reused: list[str] = []
        self.computed: list[str] = []

    # -- locking ------------------------------------------------------------------------------
    def _acquire(self) -> None:
        import fcntl

        fh = open(self.directory / ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise InputError(f"{self.directory.parent}: another featuregeo run ({owner}) is writing to this output "
                             "directory; expected it to finish first, or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        """Release the lock (the stored units stay)."""
        if self._lock_fh is not None:
            try:
                import fcntl

                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # -- units --------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.directory / _check_key(key)

    def has(self, key: str, fp: str) -> bool:
        """Whether a unit ``key`` made from inputs with fingerprint ``fp`` is stored."""
        f = self.path(key) / _FP_FILE
        try:
            return f.read_text().strip() == fp
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return False

    def get(self, key: str, fp: str, load: Callable[[Path], T]) -> T | None:
        """The stored unit read by ``load(unit_dir)``, or None when missing, stale or unreadable."""
        if not self.has(key, fp):
            return None
        try:
            value = load(self.path(key))
        except (InputError, OSError, ValueError, KeyError, json.JSONDecodeError):
            return None  # damaged: recompute
        self.reused.append(key)
        return value

    def put(self, key: str, fp: str, save: Callable[[Path], Any]) -> Path:
        """Store a unit: ``save(tmp_dir)`` writes its files, then the directory is renamed into place."""
        final = self.path(key)
        tmp = self.directory / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            save(tmp)
            atomic_write_text(tmp / _FP_FILE, fp + "\n")
            old = None
            if final.exists():
                old = self.directory / f".old-{key}-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.computed.append(key)
        return final

    def cached(self, key: str, fp: str, compute: Callable[[], T], *, save: Callable[[T, Path], Any],
               load: Callable[[Path], T]) -> T:
        """Return the stored unit if it matches ``fp``; otherwise ``compute()``, store it, return it."""
        value = self.get(key, fp, load)
        if value is not None:
            return value
        value = compute()
        self.put(key, fp, lambda d: save(value, d))
        return value

    # -- typed conveniences ---------------------------------------------------------------------
    def result(self, key: str, fp: str, compute: Callable[[], T], cls: type[T]) -> T:
        """:meth:`cached` for a :class:`~featuregeo.core.results.Result` (``save(dir)``/``load(dir)``)."""
        return self.cached(key, fp, compute, save=lambda r, d: r.save(d), load=cls.load)

    def arrays(self, key: str, fp: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """:meth:`cached` for a dict of numpy arrays (one ``.npz``; read with ``allow_pickle=False``)."""

        def save(value: dict[str, np.ndarray], d: Path) -> None:
            buf = io.BytesIO()
            np.savez(buf, **value)
            atomic_write_bytes(d / "arrays.npz", buf.getvalue())

        def load(d: Path) -> dict[str, np.ndarray]:
            with np.load(d / "arrays.npz", allow_pickle=False) as z:
                return {k: z[k] for k in z.files}

        return self.cached(key, fp, compute, save=save, load=load)

    def json(self, key: str, fp: str, compute: Callable[[], Any]) -> Any:
        """:meth:`cached` for a JSON-able value."""
        from featuregeo.core.util import atomic_write_json

        return self.cached(key, fp, compute, save=lambda v, d: atomic_write_json(d / "value.json", v),
                           load=lambda d: json.loads((d / "value.json").read_text()))

    def clear(self) -> None:
        """Remove every stored unit (the lock stays held)."""
        for p in self.directory.iterdir():
            if p.name != ".lock":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r})"


def unit_fingerprint(*parts: Any) -> str:
    """The fingerprint of a unit's inputs (alias of :func:`featuregeo.core.util.fingerprint`)."""
    return fingerprint(*parts)
