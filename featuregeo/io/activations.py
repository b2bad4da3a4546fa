"""Raw residual activations for the SAE-vs-activations spectrum comparison.

Accepted files: ``.npy`` (one layer, ``[n_tokens, d_model]``), or ``.npz`` / ``.safetensors`` holding
one array per layer named ``layer_L`` (or ``L``, ``lL``, ``blocks.L...``).  A file holding a single
array serves a single analysed layer whatever its name.  Never unpickles.

>>> acts = open_activations("acts.npz")          # doctest: +SKIP
>>> acts.require([4, 8])                          # one-line InputError naming a missing layer
>>> x = acts.get(4)                               # [n_tokens, d_model]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.util import file_fingerprint, fingerprint

ACTIVATION_SUFFIXES = (".npy", ".npz", ".safetensors")


def layer_of_name(name: str) -> int | None:
    """The layer an array name denotes (``layer_3``, ``layer3``, ``l3``, ``3``, ``blocks.3.hook...``), else None."""
    m = re.fullmatch(r"(?:layer_?|l|blocks\.)?(\d+)(?:\..*)?", name.lower())
    return int(m.group(1)) if m else None


class ActivationSource:
    """Activation arrays of a file, looked up by layer.

    Parameters
    ----------
    path : str or Path
        A ``.npy``, ``.npz`` or ``.safetensors`` file.

    Attributes
    ----------
    path : Path
    names : dict
        Array name by layer (layers parsed from the names).
    arrays : list of str
        Every array name in the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        p = self.path
        if not p.exists():
            raise InputError(f"--activations {p}: no such file; expected a .npy, .npz or .safetensors file")
        if not p.is_file():
            raise InputError(f"--activations {p}: not a file; expected a .npy, .npz or .safetensors file")
        self.suffix = p.suffix.lower()
        if self.suffix not in ACTIVATION_SUFFIXES:
            raise InputError(f"--activations {p}: unknown format {self.suffix!r}; expected .npy, .npz or .safetensors")
        self._fh = None
        try:
            if self.suffix == ".npy":
                self._npy = np.load(p, mmap_mode="r", allow_pickle=False)
                self.arrays = [p.stem]
            elif self.suffix == ".npz":
                self._fh = np.load(p, allow_pickle=False)
                self.arrays = list(self._fh.files)
            else:
                from safetensors import safe_open

                self._fh = safe_open(str(p), framework="numpy")
                self.arrays = list(self._fh.keys())
        except Exception as e:  # corrupt or pickled files
            raise InputError(f"--activations {p}: cannot read ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                             f"expected a valid {self.suffix} file of numeric arrays") from None
        if not self.arrays:
            raise InputError(f"--activations {p}: holds no arrays; expected one [n_tokens, d_model] array per layer")
        self.names = {L: k for k in self.arrays if (L := layer_of_name(k)) is not None}
        self._fp: str | None = None

    def _name(self, layer: int | None, n_layers: int) -> str | None:
        if self.suffix == ".npy":
            return self.arrays[0] if n_layers <= 1 else None
        if layer is not None and layer in self.names:
            return self.names[layer]
        if len(self.arrays) == 1 and n_layers <= 1:
            return self.arrays[0]
        return None

    def _missing(self, layer: int | None, n_layers: int) -> InputError:
        if self.suffix == ".npy" or (len(self.arrays) == 1 and not self.names):
            return InputError(f"--activations {self.path}: holds one array for one layer but {n_layers} layers are "
                              "analysed; expected a .npz or .safetensors file with an array 'layer_L' per layer")
        return InputError(f"--activations {self.path}: no array for layer {layer}; expected an array named "
                          f"'layer_{layer}' (found layers {sorted(self.names) or 'none'} in arrays "
                          f"{self.arrays[:8]})")

    def require(self, layers: Iterable[int | None]) -> None:
        """Raise a one-line InputError naming the file and the first layer without an array."""
        layers = list(layers)
        for layer in layers:
            if self._name(layer, len(layers)) is None:
                raise self._missing(layer, len(layers))

    def get(self, layer: int | None, n_layers: int = 1) -> np.ndarray:
        """The ``[n_tokens, d_model]`` array of ``layer`` (``n_layers`` = how many layers are analysed)."""
        name = self._name(layer, n_layers)
        if name is None:
            raise self._missing(layer, n_layers)
        try:
            arr = self._npy if self.suffix == ".npy" else (self._fh[name] if self.suffix == ".npz"
                                                          else self._fh.get_tensor(name))
        except Exception as e:
            raise InputError(f"--activations {self.path}[{name}]: cannot read ({type(e).__name__}); expected a "
                             "complete numeric array") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise InputError(f"--activations {self.path}[{name}]: expected a 2-D real array [n_tokens, d_model]. "
                             f"Got shape {arr.shape} of {arr.dtype} instead.")
        return arr

    def fingerprint(self, layer: int | None, n_layers: int = 1) -> str:
        """Identity and content of the array used for ``layer`` (file fingerprint + array name)."""
        if self._fp is None:
            self._fp = file_fingerprint(self.path)
        return fingerprint("activations", self._fp, self._name(layer, n_layers))

    def __repr__(self) -> str:
        return f"ActivationSource({str(self.path)!r}, layers={sorted(self.names)})"


def open_activations(path: str | Path) -> ActivationSource:
    """Open an activation file (cheap: arrays are read on :meth:`ActivationSource.get`)."""
    return ActivationSource(path)


__all__ = ["ActivationSource", "open_activations", "layer_of_name", "ACTIVATION_SUFFIXES"]
