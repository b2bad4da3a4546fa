"""The model's read-out (final norm, unembedding, final logit soft-cap) and the torch hooks lenses need.

* :func:`find_readout` — the pieces a logit lens applies to a hidden state ``h_l``: the model's own
  final norm, its unembedding (LM head weight and bias) and the final logit soft-cap when the config
  has one (Gemma 2/3: ``final_logit_softcapping``).  A model whose final norm or unembedding cannot be
  found raises a one-line :class:`~featuregeo.core.errors.InputError`: a lens without the norm would be
  silently wrong.
* :class:`Readout` — the same pieces as a small object (also buildable by hand for synthetic models);
  ``readout.logits(h)`` is ``softcap(norm(h) @ W.T + bias)``, optionally on a vocabulary subset.
* :func:`hidden_states` — the residual stream after every requested block for token rows that start
  with BOS (BOS dropped), as one float32 array.
* :func:`ablate_directions` — a context manager that mean-ablates a set of directions at the output
  of one block (the probe causal check).
* :func:`model_identity` — name, layers, width and vocabulary of a model (for lens files and checkpoints).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.io.models import LoadedModel, base_model, decoder_layers, iter_residual_stream

__all__ = ["Readout", "find_readout", "model_identity", "hidden_states", "ablate_directions", "NORM_NAMES"]

NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


@dataclass
class Readout:
    """What a logit lens applies to a hidden state: ``softcap(norm(h) @ weight.T + bias)``.

    Attributes
    ----------
    norm : callable
        The model's final norm (a torch module or any callable on ``[..., d]`` tensors).
    weight : torch.Tensor [vocab, d]
        The unembedding (LM head weight).
    bias : torch.Tensor [vocab] or None
    softcap : float or None
        Final logit soft-cap ``c``: logits become ``c * tanh(logits / c)``.
    """

    norm: Callable
    weight: Any
    bias: Any = None
    softcap: float | None = None

    @property
    def vocab(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, h, subset=None, *, dtype=None):
        """Logits of hidden states ``h`` ``[..., d]`` (float32 result).

        Parameters
        ----------
        h : torch.Tensor [..., d]
        subset : torch.LongTensor [k], optional
            Only these vocabulary entries (exact: the soft-cap is elementwise).
        dtype : torch.dtype, optional
            Precision of the unembedding matmul (default float32; ``torch.bfloat16`` is ~5x faster on
            CPUs with bf16 units, with logit errors ~0.4 % of their size).
        """
        import torch

        x = self.norm(h)
        w = self.weight if subset is None else self.weight[subset]
        if dtype is not None and dtype != torch.float32:
            out = (x.to(dtype) @ w.to(dtype).T).float()
        else:
            out = x.float() @ w.float().T
        if self.bias is not None:
            out = out + (self.bias if subset is None else self.bias[subset]).float()
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


def find_readout(loaded: LoadedModel) -> Readout:
    """The final norm, unembedding and soft-cap of a transformers causal LM.

    Raises
    ------
    InputError
        Not a transformers model, no final norm (looked for ``norm``, ``final_layernorm``,
        ``final_layer_norm``, ``ln_f``, ``norm_f`` on the base model), or no unembedding whose
        weight is ``[vocab, d_model]``.
    """
    import torch

    if getattr(loaded, "kind", "hf") != "hf":
        raise InputError(f"model {loaded.name}: expected a transformers model for a lens. Got a {loaded.kind!r} "
                         "model instead.")
    model = loaded.model
    base = base_model(model)
    norm = None
    for name in NORM_NAMES:
        cand = getattr(base, name, None)
        if isinstance(cand, torch.nn.Module):
            norm = cand
            break
    if norm is None:
        raise InputError(f"model {loaded.name} ({type(model).__name__}): cannot find its final norm (looked for "
                         f"{', '.join(NORM_NAMES)}); a lens without it would be silently wrong")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(head, "weight", None)
    if w is None or w.ndim != 2 or int(w.shape[1]) != int(loaded.d_model):
        raise InputError(f"model {loaded.name} ({type(model).__name__}): cannot find its unembedding (an output "
                         f"embedding with a [vocab, {loaded.d_model}] weight); a lens needs it")
    cfg = getattr(model.config, "text_config", None) or model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return Readout(norm=norm, weight=w.detach(), bias=None if getattr(head, "bias", None) is None
                   else head.bias.detach(), softcap=float(cap) if cap else None)


def model_identity(loaded: LoadedModel) -> dict:
    """``{"model", "n_layers", "d_model", "vocab"}`` of a loaded model (lens files and checkpoints)."""
    head = loaded.model.get_output_embeddings() if hasattr(loaded.model, "get_output_embeddings") else None
    vocab = int(head.weight.shape[0]) if getattr(head, "weight", None) is not None else 0
    return {"model": str(loaded.name), "n_layers": int(loaded.n_layers), "d_model": int(loaded.d_model),
            "vocab": vocab}


def hidden_states(loaded: LoadedModel, rows: np.ndarray, layers: Sequence[int], *, batch_size: int = 8,
                  progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Residual stream after blocks ``layers`` for rows that start with BOS (BOS position dropped).

    Parameters
    ----------
    loaded : LoadedModel
    rows : ndarray [n_rows, 1 + T] of int
    layers : sequence of int
    batch_size : int, default=8

    Returns
    -------
    ndarray [len(layers), n_rows, T, d_model], float32
    """
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, 1 + T]. Got {rows.dtype} shape "
                         f"{rows.shape} instead.")
    layers = [int(x) for x in layers]
    out = np.empty((len(layers), rows.shape[0], rows.shape[1] - 1, loaded.d_model), dtype=np.float32)
    done = 0
    for b in iter_residual_stream(loaded, rows, layers, batch_size=batch_size, seq_len=None, add_bos=False,
                                  drop_bos=True, out_dtype="float32"):
        for i, L in enumerate(layers):
            out[i, b.rows.start:b.rows.stop] = b.acts[L][:, 1:].numpy()
        done += len(b.rows)
        if progress is not None and (done == rows.shape[0] or done % (batch_size * 16) == 0):
            progress(f"lens: hidden states {done}/{rows.shape[0]} rows")
    return out


@contextlib.contextmanager
def ablate_directions(loaded: LoadedModel, layer: int, directions: np.ndarray, means: np.ndarray
                      ) -> Iterator[None]:
    """Mean-ablate ``directions`` at the output of block ``layer`` while the context is open.

    The residual ``h`` becomes ``h - (h @ U.T - means) @ U`` for orthonormal rows ``U``: its
    coordinates along ``U`` are replaced by their mean, everything orthogonal is untouched.

    Parameters
    ----------
    loaded : LoadedModel
    layer : int
    directions : ndarray [k, d_model]
        Orthonormal rows.
    means : ndarray [k]
        Mean coordinate along each row (over training tokens).
    """
    import torch

    blocks = decoder_layers(loaded.model)
    if not 0 <= int(layer) < len(blocks):
        raise InputError(f"layer: block {layer} is out of range; expected 0..{len(blocks) - 1}")
    U = np.asarray(directions, dtype=np.float32)
    if U.ndim != 2 or U.shape[1] != loaded.d_model:
        raise InputError(f"directions: expected [k, {loaded.d_model}]. Got shape {U.shape} instead.")
    Ut = torch.as_tensor(U, device=loaded.device)
    mu = torch.as_tensor(np.asarray(means, dtype=np.float32).reshape(-1), device=loaded.device)

    def hook(module, args, output):
        h = output[0] if isinstance(output, (tuple, list)) else output
        coef = h.float() @ Ut.T - mu
        new = (h.float() - coef @ Ut).to(h.dtype)
        if isinstance(output, tuple):
            return (new,) + tuple(output[1:])
        return new

    handle = blocks[int(layer)].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
