"""Raw residual activations for the SAE-vs-activations spectrum comparison.

Accepted files: ``.npy`` (one layer, ``[n_tokens, d_model]``), or ``.npz`` / ``.safetensors`` holding
one array per layer named ``layer_L`` (or just ``L``).  Never unpickles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from featuregeo.core.errors import InputError


def _layer_of(name: str) -> int | None:
    m = re.fullmatch(r"(?:layer_?|l|blocks\.)?(\d+)(?:\..*)?", name.lower())
    return int(m.group(1)) if m else None


def activation_provider(path: str | Path) -> Callable[[int], np.ndarray | None]:
    """``provider(layer)`` -> the activations of that layer (float32 view or memmap), or None if absent."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--activations {p}: no such file; expected a .npy, .npz or .safetensors file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            if arr.ndim != 2:
                raise InputError(f"--activations {p}: expected a 2-D array [n_tokens, d_model]. Got shape {arr.shape}.")
            return lambda layer: arr
        if suffix == ".npz":
            z = np.load(p, allow_pickle=False)
            names = {(_layer_of(k)): k for k in z.files}
            return lambda layer: (np.asarray(z[names[layer]]) if layer in names else None)
        if suffix == ".safetensors":
            from safetensors import safe_open

            fh = safe_open(str(p), framework="numpy")
            names = {(_layer_of(k)): k for k in fh.keys()}
            return lambda layer: (fh.get_tensor(names[layer]) if layer in names else None)
    except InputError:
        raise
    except Exception as e:  # corrupt or pickled files
        raise InputError(f"--activations {p}: cannot read ({type(e).__name__}: {e}); expected a valid "
                         f"{suffix} file of numeric arrays") from None
    raise InputError(f"--activations {p}: unknown format {suffix!r}; expected .npy, .npz or .safetensors")
