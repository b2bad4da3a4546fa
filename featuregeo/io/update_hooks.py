"""Torch hooks for the layer-update analysis: residual and sub-layer updates, and patched read-outs.

* :func:`sublayer_modules` — the modules whose outputs are a block's attention and MLP updates
  (Gemma 2/3: ``post_attention_layernorm`` / ``post_feedforward_layernorm``; Llama-style blocks
  without post-norms: ``self_attn`` / ``mlp``).
* :func:`read_updates` — for token rows, the residual stream before and after every block and the
  attention and MLP sub-layer updates of every block, all positions (BOS included).
* :func:`final_logprobs` — the model's final next-token log-probabilities at the *last* position of
  each row, optionally resuming the forward pass at block ``start_block`` from given hidden states
  (blocks before it are bypassed, not computed): this is how the analysis replaces one position's
  update by its tokenwise part and measures the output perturbation.

Every hook and bypass is removed again on exit, also on error, leaving the model as it was.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.io.hooks import check_hookable
from featuregeo.io.models import LoadedModel, base_model, decoder_layers

__all__ = ["UpdateActivations", "sublayer_modules", "read_updates", "final_logprobs", "bypass_blocks"]


@dataclass
class UpdateActivations:
    """Residual stream and sub-layer updates of token rows (float32, every position incl. BOS).

    Attributes
    ----------
    resid : ndarray [n_layers + 1, n_rows, T, d]
        ``resid[0]`` is the input of block 0 (scaled embeddings), ``resid[L + 1]`` the output of
        block ``L``.
    attn, mlp : ndarray [n_layers, n_rows, T, d]
        What block ``L``'s attention and MLP sub-layers add to the residual stream, so that
        ``resid[L + 1] = resid[L] + attn[L] + mlp[L]`` (up to float rounding).
    """

    resid: np.ndarray
    attn: np.ndarray
    mlp: np.ndarray


def sublayer_modules(block) -> tuple[Any, Any]:
    """``(attention_out, mlp_out)``: the modules of ``block`` whose outputs are added to the residual.

    Raises
    ------
    InputError
        A block layout this function does not know.
    """
    if hasattr(block, "post_attention_layernorm") and hasattr(block, "post_feedforward_layernorm"):
        return block.post_attention_layernorm, block.post_feedforward_layernorm  # Gemma 2 / 3 sandwich norms
    if hasattr(block, "self_attn") and hasattr(block, "mlp"):
        return block.self_attn, block.mlp  # Llama / Mistral / Qwen: sub-layers add directly
    raise InputError(f"model block {type(block).__name__}: cannot find its attention and MLP sub-layers; expected "
                     "a Gemma or Llama-style decoder block (self_attn + mlp)")


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _check_rows(rows) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"rows: expected a 2-D integer array [n_rows, >= 2] of token ids. Got {rows.dtype} shape "
                         f"{rows.shape} instead.")
    return rows


def read_updates(loaded: LoadedModel, rows: np.ndarray, *, batch_size: int = 8) -> UpdateActivations:
    """Residual stream before/after each block and each block's attention and MLP updates.

    Parameters
    ----------
    loaded : LoadedModel
        A transformers causal LM with hookable blocks.
    rows : ndarray [n_rows, T] of int
        Token rows of equal length (BOS first if the model expects one); no padding.
    batch_size : int, default=8

    Returns
    -------
    UpdateActivations
    """
    import torch

    check_hookable(loaded)
    rows = _check_rows(rows)
    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    n, (R, T), d = len(blocks), rows.shape, loaded.d_model
    resid = np.empty((n + 1, R, T, d), dtype=np.float32)
    attn = np.empty((n, R, T, d), dtype=np.float32)
    mlp = np.empty((n, R, T, d), dtype=np.float32)
    cur: dict = {}

    def keep(key):
        def hook(module, args, output):
            cur[key] = _first(output).detach()
        return hook

    def pre(module, args, kwargs):
        cur[("resid", 0)] = (args[0] if args else kwargs["hidden_states"]).detach()

    handles = [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    try:
        for L, b in enumerate(blocks):
            a_mod, m_mod = sublayer_modules(b)
            handles += [b.register_forward_hook(keep(("resid", L + 1))), a_mod.register_forward_hook(keep(("attn", L))),
                        m_mod.register_forward_hook(keep(("mlp", L)))]
        with torch.inference_mode():
            for i in range(0, R, batch_size):
                ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
                cur.clear()
                base(input_ids=ids, use_cache=False)
                j = slice(i, i + ids.shape[0])
                for L in range(n + 1):
                    resid[L, j] = cur[("resid", L)].float().cpu().numpy()
                for L in range(n):
                    attn[L, j] = cur[("attn", L)].float().cpu().numpy()
                    mlp[L, j] = cur[("mlp", L)].float().cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return UpdateActivations(resid=resid, attn=attn, mlp=mlp)


@contextlib.contextmanager
def bypass_blocks(loaded: LoadedModel, n_first: int) -> Iterator[None]:
    """Context manager: blocks ``0 .. n_first - 1`` return their input without computing anything.

    Used to resume a forward pass at block ``n_first`` from stored hidden states passed as
    ``inputs_embeds``.  The blocks' own ``forward`` comes back on exit.
    """
    blocks = decoder_layers(loaded.model)
    if not 0 <= n_first <= len(blocks):
        raise InputError(f"start_block: expected a block in 0..{len(blocks)}. Got {n_first} instead.")

    def identity(hidden_states, *args, **kwargs):
        return hidden_states

    patched = []
    try:
        for b in blocks[:n_first]:
            b.forward = identity
            patched.append(b)
        yield
    finally:
        for b in patched:
            del b.forward


def final_logprobs(loaded: LoadedModel, rows: np.ndarray, *, start_block: int = 0, hidden: np.ndarray | None = None,
                   batch_size: int = 64):
    """Final next-token log-probabilities at the last position of each row (float32 torch tensor [n_rows, vocab]).

    Parameters
    ----------
    loaded : LoadedModel
    rows : ndarray [n_rows, T] of int
        Token ids (their embeddings are used only when ``hidden`` is None).
    start_block : int, default=0
        With ``hidden``: resume the forward pass at this block (``n_layers`` means only the final
        norm and the unembedding run); earlier blocks are bypassed.
    hidden : ndarray [n_rows, T, d], optional
        The input of block ``start_block`` at every position (e.g. a stored residual with one
        position changed).  Causal attention makes the last position's output depend only on rows'
        positions ``0 .. T - 1``.
    batch_size : int, default=64

    Returns
    -------
    torch.Tensor [n_rows, vocab], float32
        ``log_softmax`` of the logits, after the model's final logit soft-capping when it has one.
    """
    import torch

    check_hookable(loaded)
    rows = _check_rows(rows) if hidden is None else np.asarray(rows)
    model = loaded.model
    base = base_model(model)
    head = model.get_output_embeddings()
    cfg = getattr(model.config, "text_config", None) or model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    if hidden is not None:
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3 or hidden.shape[2] != loaded.d_model:
            raise InputError(f"hidden: expected an array [n_rows, T, {loaded.d_model}]. Got shape {hidden.shape} instead.")
    n = rows.shape[0] if hidden is None else hidden.shape[0]
    outs = []
    ctx = bypass_blocks(loaded, start_block) if hidden is not None else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        for i in range(0, n, batch_size):
            if hidden is None:
                ids = torch.as_tensor(rows[i:i + batch_size], dtype=torch.long, device=loaded.device)
                h = base(input_ids=ids, use_cache=False).last_hidden_state
            else:
                x = torch.as_tensor(hidden[i:i + batch_size], device=loaded.device).to(next(head.parameters()).dtype)
                h = base(inputs_embeds=x, use_cache=False).last_hidden_state
            logits = head(h[:, -1]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            outs.append(torch.log_softmax(logits, dim=-1))
    return torch.cat(outs, 0)
