"""Model code for the interaction basis: a decoder block as a differentiable step, section activations,
and a hook that keeps only some directions of the residual stream.

* :func:`section_activations` — the residual stream after blocks ``A..B`` on token rows that start
  with BOS, split into the BOS position (identical on every row) and the text positions.
* :func:`block_step` — block ``L + 1`` as a torch function ``step(x, c)`` of the residual stream after
  block ``L`` at the text positions (``x``: ``[rows, T, d]``); the BOS position is held fixed as
  context.  It runs attention with PyTorch's math SDPA kernel so that both reverse-mode
  (``torch.func.vjp``) and forward-mode (``torch.func.jvp``) derivatives exist, and can run a float64
  copy of the block (Gemma's RMSNorms, which cast to float32 internally, then compute in float64 too).
  ``c`` (the folded constant) is ignored: the blocks of the supported models have
  no additive biases, so the constant reaches the next node layer only as its own coordinate.
* :func:`project_residual` — a context manager in which the output of one block is replaced, at every
  position but the first (BOS), by an affine map of itself (e.g. "keep the top n directions").

Hooks are always removed, also on error, leaving the model as it was.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.io.models import LoadedModel, base_model, decoder_layers, residual_stream

__all__ = ["section_activations", "block_step", "block_kwargs", "project_residual", "has_biases"]


class _Stop(Exception):
    pass


def _rows(rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, 1 + T] starting with BOS. Got {rows.dtype} "
                         f"shape {rows.shape} instead.")
    return rows


def section_activations(loaded: LoadedModel, rows: np.ndarray, layers: list[int], *, batch_size: int = 8
                        ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Residual stream after each block in ``layers`` on ``rows`` (BOS first, equal lengths).

    Returns
    -------
    acts : dict layer -> ndarray [n_rows, T, d_model], float32
        The text positions (BOS dropped).
    bos : dict layer -> ndarray [d_model], float32
        The BOS position (the same on every row: it sees only itself).
    """
    rows = _rows(rows)
    bos_id = loaded.bos_token_id
    if bos_id is None or not np.all(rows[:, 0] == bos_id):
        raise InputError("rows: expected every row to start with the tokenizer's BOS token")
    out = residual_stream(loaded, rows, layers, batch_size=batch_size, seq_len=None, drop_bos=False, flatten=False,
                          out_dtype="float32", as_numpy=True)
    return ({L: np.ascontiguousarray(a[:, 1:]) for L, a in out.items()}, {L: a[0, 0].copy() for L, a in out.items()})


def block_kwargs(loaded: LoadedModel, block: int, length: int) -> dict:
    """The keyword arguments (position embeddings, mask, positions) the base model passes to ``block``
    for one row of ``length`` tokens, captured with a pre-hook on a dummy forward pass."""
    import torch

    blocks = decoder_layers(loaded.model)
    if not 0 <= block < len(blocks):
        raise InputError(f"block: expected 0..{len(blocks) - 1}. Got {block} instead.")
    cap: dict = {}

    def pre(module, args, kwargs):
        cap.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    ids = torch.full((1, length), int(loaded.bos_token_id or 0), dtype=torch.long, device=loaded.device)
    h = blocks[block].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with torch.no_grad():
            base_model(loaded.model)(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        h.remove()
    return cap


def has_biases(loaded: LoadedModel, block: int) -> bool:
    """Whether decoder block ``block`` has additive bias parameters (norm weights do not count)."""
    blk = decoder_layers(loaded.model)[block]
    return any(name.endswith(".bias") and "norm" not in name for name, _ in blk.named_parameters())


def _cast(v, dtype):
    import torch

    if isinstance(v, torch.Tensor) and v.is_floating_point():
        return v.to(dtype)
    if isinstance(v, tuple):
        return tuple(_cast(x, dtype) for x in v)
    return v


def _gemma_norm_f64(self, x):
    """Gemma's RMSNorm, ``x / rms(x) * (1 + w)``, computed in the input's dtype (the original casts to float32)."""
    import torch

    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
    return out * (1.0 + self.weight.to(x.dtype))


def _norms_in_float64(block) -> int:
    """Make the Gemma RMSNorms of a float64 copy of a block compute in float64; returns how many."""
    import types

    n = 0
    for mod in block.modules():
        if type(mod).__name__.startswith("Gemma") and type(mod).__name__.endswith("RMSNorm") and hasattr(mod, "eps"):
            mod.forward = types.MethodType(_gemma_norm_f64, mod)
            n += 1
    return n


def block_step(loaded: LoadedModel, block: int, bos: np.ndarray, length: int, *, dtype: str = "float32") -> Callable:
    """Block ``block`` as ``step(x, c) -> y``: residual after block ``block - 1`` -> after block ``block``.

    Parameters
    ----------
    loaded : LoadedModel
    block : int
        The block to run (``1 .. n_layers - 1``).
    bos : ndarray [d_model]
        The residual at the BOS position before the block (held fixed; prepended to every row).
    length : int
        Text positions per row ``T`` (the block sees ``1 + T`` positions).
    dtype : {"float32", "float64"}
        float64 runs a float64 copy of the block.

    Returns
    -------
    callable
        ``step(x: Tensor[rows, T, d], c) -> Tensor[rows, T, d]`` (``c`` is ignored, see the module
        docstring), differentiable with ``torch.func`` in both modes.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    blk = decoder_layers(loaded.model)[block]
    if tdt != next(blk.parameters()).dtype:
        blk = copy.deepcopy(blk).to(tdt)
        if tdt == torch.float64:
            _norms_in_float64(blk)
    for p in blk.parameters():
        p.requires_grad_(False)
    kw = _cast(block_kwargs(loaded, block, length + 1), tdt)
    bos_t = torch.as_tensor(np.asarray(bos), dtype=tdt).reshape(1, 1, -1)

    def step(x, c=None):
        h = torch.cat([bos_t.expand(x.shape[0], 1, x.shape[-1]), x], dim=1)
        with sdpa_kernel(SDPBackend.MATH):
            y = blk(h, **kw)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return y[:, 1:]

    return step


@contextlib.contextmanager
def project_residual(loaded: LoadedModel, block: int, affine: np.ndarray) -> Iterator[None]:
    """Context manager: the output ``h`` of ``block`` becomes ``A h + a`` at every position but the first.

    Parameters
    ----------
    loaded : LoadedModel
    block : int
    affine : ndarray [d_model, d_model + 1]
        ``[A | a]``, applied to ``[h, 1]`` (e.g. :meth:`LayerBasis.keep_top`).
    """
    import torch

    blocks = decoder_layers(loaded.model)
    if not 0 <= block < len(blocks):
        raise InputError(f"block: expected 0..{len(blocks) - 1}. Got {block} instead.")
    affine = np.asarray(affine, dtype=np.float64)
    d = loaded.d_model
    if affine.shape != (d, d + 1):
        raise InputError(f"affine: expected shape ({d}, {d + 1}). Got {affine.shape} instead.")
    A = torch.as_tensor(affine[:, :d].T.copy())
    a = torch.as_tensor(affine[:, d].copy())

    def hook(module, args, output):
        h = output[0] if isinstance(output, (tuple, list)) else output
        body = (h[:, 1:].double() @ A + a).to(h.dtype)
        new = torch.cat([h[:, :1], body], dim=1)
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new

    handle = blocks[block].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
