"""Torch forward hooks on a loaded model: every representation of a batch, skipped blocks, held-out loss.

These functions register hooks on the decoder blocks of a :class:`~featuregeo.io.models.LoadedModel`
(a transformers causal LM) and always remove them again, also on error, leaving the model exactly
as it was.

* :func:`read_representations` — ``rep 0`` (the input of block 0, i.e. the scaled token embeddings)
  and ``rep L+1`` (the output of block ``L``) for token rows that start with BOS.
* :func:`skip_blocks` — a context manager in which some blocks pass their input through unchanged.
* :func:`heldout_loss` — mean next-token cross-entropy with some blocks skipped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.core.results import Result
from featuregeo.io.models import LoadedModel, base_model, decoder_layers

__all__ = ["HeldoutLoss", "check_hookable", "read_representations", "skip_blocks", "heldout_loss"]


@dataclass
class HeldoutLoss(Result):
    """Next-token loss of some token rows with some blocks skipped.

    Attributes
    ----------
    loss : float
        Mean cross-entropy, nats/token.
    n_tokens : int
        Predicted positions.
    dropped : list of int
        Skipped decoder blocks (sorted).
    seconds : float
        Wall time (not compared: equal results may take different times).
    """

    kind = "heldout_loss"
    loss: float = float("nan")
    n_tokens: int = 0
    dropped: list[int] = field(default_factory=list)
    seconds: float = field(default=0.0, compare=False)


def check_hookable(loaded: LoadedModel, name: str = "model") -> None:
    """Raise an InputError unless ``loaded`` is a transformers model whose blocks can be hooked."""
    if getattr(loaded, "kind", "hf") != "hf":
        raise InputError(f"{name} {loaded.name}: expected a transformers model (hooks on its decoder blocks). "
                         f"Got a {loaded.kind!r} model instead.")
    decoder_layers(loaded.model)


def _check_rows(rows, what: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, {what}]. Got {rows.dtype} shape "
                         f"{rows.shape} instead.")
    return rows


def read_representations(loaded: LoadedModel, rows: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """Residual representations of token rows that start with BOS.

    Parameters
    ----------
    loaded : LoadedModel
    rows : ndarray [n_rows, 1 + T] of int
        BOS first; all rows the same length (no padding).
    batch_size : int, default=8

    Returns
    -------
    ndarray [n_layers + 1, n_rows, T, d_model], float32
        ``rep 0`` is the input of block 0; ``rep L+1`` the output of block ``L``.  The BOS position
        is dropped.
    """
    import torch

    rows = _check_rows(rows, "1 + T")
    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    n = len(blocks)
    out = np.empty((n + 1, rows.shape[0], rows.shape[1] - 1, loaded.d_model), dtype=np.float32)
    cur: dict = {}

    def pre(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        cur[0] = h.detach()

    def make(L):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            cur[L + 1] = h.detach()
        return hook

    handles = [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    try:
        handles += [blocks[L].register_forward_hook(make(L)) for L in range(n)]
        with torch.inference_mode():
            for i in range(0, rows.shape[0], batch_size):
                ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
                cur.clear()
                base(input_ids=ids, use_cache=False)
                for r in range(n + 1):
                    out[r, i:i + ids.shape[0]] = cur[r][:, 1:].float().cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return out


@contextlib.contextmanager
def skip_blocks(loaded: LoadedModel, drop: Iterable[int]) -> Iterator[list[int]]:
    """Context manager: decoder blocks ``drop`` pass their input through unchanged.

    Forward hooks replace each dropped block's output by its input, so every other block keeps its
    own attention type, sliding window and rotary embedding.  The hooks are removed on exit, also on
    error, leaving the model exactly as it was.

    Parameters
    ----------
    loaded : LoadedModel
    drop : iterable of int
        Blocks in ``0 .. n_layers - 1``.

    Yields
    ------
    list of int
        The sorted blocks skipped.

    Examples
    --------
    >>> with skip_blocks(model, [3, 4]):          # doctest: +SKIP
    ...     out = model.model(input_ids=ids)
    """
    blocks = decoder_layers(loaded.model)
    drop = sorted({int(x) for x in drop})
    bad = [L for L in drop if not 0 <= L < len(blocks)]
    if bad:
        raise InputError(f"drop: blocks {bad} are out of range; expected blocks in 0..{len(blocks) - 1}")

    def hook(module, args, kwargs, output):
        h = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            return (h,) + tuple(output[1:])
        return h

    handles = []
    try:
        handles += [blocks[L].register_forward_hook(hook, with_kwargs=True) for L in drop]
        yield drop
    finally:
        for h in handles:
            h.remove()


def heldout_loss(loaded: LoadedModel, rows: np.ndarray, *, drop: Iterable[int] = (), batch_size: int = 4,
                 chunk: int = 128) -> HeldoutLoss:
    """Mean next-token cross-entropy (nats/token) of ``rows`` with blocks ``drop`` skipped.

    Every position predicts the next token (the first prediction reads only BOS).  The LM head is
    applied to ``chunk`` positions at a time, so memory stays ~``chunk x vocab`` floats; Gemma's
    final logit soft-capping is applied when the config has it.

    Parameters
    ----------
    loaded : LoadedModel
    rows : ndarray [n_rows, >= 2] of int
    drop : iterable of int, default=()
    batch_size : int, default=4
    chunk : int, default=128

    Returns
    -------
    HeldoutLoss
    """
    import torch
    import torch.nn.functional as F

    rows = _check_rows(rows, ">= 2 tokens")
    model = loaded.model
    base = base_model(model)
    head = model.get_output_embeddings()
    cfg = getattr(model.config, "text_config", None) or model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    total = 0.0
    count = 0
    t0 = time.perf_counter()
    with skip_blocks(loaded, drop) as dropped, torch.inference_mode():
        for i in range(0, rows.shape[0], batch_size):
            ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
            h = base(input_ids=ids, use_cache=False).last_hidden_state[:, :-1].reshape(-1, loaded.d_model)
            tgt = ids[:, 1:].reshape(-1)
            for j in range(0, h.shape[0], chunk):
                logits = head(h[j:j + chunk]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                total += float(F.cross_entropy(logits, tgt[j:j + chunk], reduction="sum").double())
                count += int(tgt[j:j + chunk].numel())
    return HeldoutLoss(loss=total / count, n_tokens=count, dropped=list(dropped), seconds=time.perf_counter() - t0)
