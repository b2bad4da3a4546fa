"""Reading the residual stream: one batched forward pass through the base model per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from featuregeo.core.errors import InputError
from featuregeo.io.models.loading import LoadedModel, base_model, decoder_layers, torch_dtype


def check_layers(loaded: LoadedModel, layers: int | Iterable[int]) -> list[int]:
    """Validate and sort a layer selection; InputError naming the valid range otherwise."""
    if isinstance(layers, (int,)) or (hasattr(layers, "__index__") and not hasattr(layers, "__len__")):
        layers = [int(layers)]
    out = []
    for x in layers:
        try:
            v = int(x)
        except (TypeError, ValueError):
            raise InputError(f"layers: expected integers in 0..{loaded.n_layers - 1}. Got {x!r} instead.") from None
        if not 0 <= v < loaded.n_layers:
            raise InputError(f"layers: layer {v} is out of range for {loaded.name!r}; expected layers in "
                             f"0..{loaded.n_layers - 1} ({loaded.n_layers} blocks)")
        out.append(v)
    if not out:
        raise InputError(f"layers: empty selection; expected at least one layer in 0..{loaded.n_layers - 1}")
    return sorted(set(out))


class _StopForward(Exception):
    """Raised from the last needed layer's hook to skip the remaining blocks."""


@dataclass
class ResidualBatch:
    """One batch of residual activations.

    acts : dict layer -> tensor [batch, T, d_model] (on CPU, ``out_dtype``).
    input_ids : tensor [batch, T], the tokens at those positions (padding = pad id).
    mask : bool tensor [batch, T], True at real tokens (False at padding and at dropped BOS).
    rows : range, indices of these rows among all inputs.
    embeddings : tensor [batch, T, d_model] or None, the input of block 0 (the model's scaled token
        embeddings; ``rep 0`` of :func:`featuregeo.io.hooks.read_representations`), when asked for.
    """

    acts: dict
    input_ids: Any
    mask: Any
    rows: range
    embeddings: Any = None

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def flat(self, layer: int):
        """The real tokens' activations of ``layer`` as [n_tokens, d_model]."""
        return self.acts[layer][self.mask]


def _rows(loaded: LoadedModel, inputs, *, add_bos: bool | None, seq_len: int | None
          ) -> Iterator[list[int]]:
    """Turn texts or token-id rows into token-id lists (BOS added, truncated to seq_len)."""
    import numpy as np

    tok = loaded.tokenizer
    bos = loaded.bos_token_id
    if isinstance(inputs, str):
        inputs = [inputs]
    try:
        import torch

        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().cpu().numpy()
    except ImportError:
        pass
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 1:
            inputs = inputs[None, :]
        if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
            raise InputError(f"inputs: expected texts or a 2-D integer array of token ids. Got an array of "
                             f"shape {inputs.shape} and dtype {inputs.dtype} instead.")
    kind = None
    for i, row in enumerate(inputs):
        if isinstance(row, str):
            rkind = "text"
            ids = tok(row, add_special_tokens=False)["input_ids"]
            want_bos = True if add_bos is None else add_bos
        else:
            rkind = "ids"
            try:
                ids = [int(t) for t in row]
            except (TypeError, ValueError):
                raise InputError(f"inputs[{i}]: expected a text or a sequence of token ids. "
                                 f"Got {type(row).__name__} instead.") from None
            want_bos = False if add_bos is None else add_bos
        if kind is None:
            kind = rkind
        elif kind != rkind:
            raise InputError(f"inputs[{i}]: mixes texts and token ids; expected all texts or all token-id rows")
        if want_bos:
            if bos is None:
                raise InputError(f"add_bos: the tokenizer of {loaded.name!r} has no BOS token; expected add_bos=False")
            ids = [bos] + ids
        if seq_len is not None:
            limit = seq_len + (1 if ids and bos is not None and ids[0] == bos else 0)
            if len(ids) > limit:
                if rkind == "ids":  # token ids are never cut silently
                    raise InputError(f"inputs[{i}]: {len(ids)} token ids, more than seq_len={seq_len} "
                                     "(plus BOS); expected shorter rows or a larger seq_len / seq_len=None")
                ids = ids[:limit]
        if not ids:
            raise InputError(f"inputs[{i}]: empty after tokenisation; expected at least one token")
        yield ids


def batches(it: Iterator[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    """Group an iterator of rows into lists of ``batch_size`` rows (the last may be shorter)."""
    buf: list[list[int]] = []
    for row in it:
        buf.append(row)
        if len(buf) == batch_size:
            yield buf
            buf = []
    if buf:
        yield buf


def _check_common(loaded, batch_size, seq_len):
    if not isinstance(loaded, LoadedModel):
        raise InputError(f"loaded: expected a LoadedModel from featuregeo.io.models.load_model. "
                         f"Got {type(loaded).__name__} instead.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: expected a positive integer. Got {batch_size!r} instead.")
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
        raise InputError(f"seq_len: expected a positive integer or None. Got {seq_len!r} instead.")


def iter_residual_stream(loaded: LoadedModel, inputs, layers: int | Iterable[int], *,
                         batch_size: int = 16, seq_len: int | None = 256, add_bos: bool | None = None,
                         drop_bos: bool = True, out_dtype: str | None = None, embeddings: bool = False
                         ) -> Iterator[ResidualBatch]:
    """Stream residual activations one batch at a time (for writing to disk as you go).

    Parameters are as in :func:`residual_stream`; ``inputs`` may be any iterable (also a generator)
    of texts or token-id rows, consumed lazily.  Yields :class:`ResidualBatch`; rows are right-padded
    to the longest row of their batch.  ``embeddings=True`` also keeps the input of block 0
    (``ResidualBatch.embeddings``) from the same forward pass.
    """
    import torch

    _check_common(loaded, batch_size, seq_len)
    layers = check_layers(loaded, layers)
    odt = torch_dtype(out_dtype if out_dtype is not None else loaded.dtype)
    bos = loaded.bos_token_id
    pad = getattr(loaded.tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    device = torch.device(loaded.device)
    start = 0
    for batch in batches(_rows(loaded, inputs, add_bos=add_bos, seq_len=seq_len), batch_size):
        T = max(len(r) for r in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), T), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        mask = attn.bool()
        if drop_bos and bos is not None:
            mask[:, 0] &= ids[:, 0] != bos
        # no padding -> no mask: lets attention take its plain causal path (measurably faster)
        amask = None if bool(attn.all()) else attn.to(device)
        acts = _forward_layers(loaded, ids.to(device), amask, layers, odt, embeddings=embeddings)
        emb = acts.pop(EMBEDDINGS, None)
        yield ResidualBatch(acts=acts, input_ids=ids, mask=mask, rows=range(start, start + len(batch)), embeddings=emb)
        start += len(batch)


EMBEDDINGS = "embeddings"  # key of the block-0 input in _forward_layers' output


def _forward_layers(loaded: LoadedModel, ids, attn, layers: list[int], odt, *, embeddings: bool = False) -> dict:
    import torch

    if loaded.kind == "tl":
        names = {f"blocks.{L}.hook_resid_post": L for L in layers}
        if embeddings:
            names["blocks.0.hook_resid_pre"] = EMBEDDINGS
        with torch.inference_mode():
            _, cache = loaded.model.run_with_cache(ids, attention_mask=attn, names_filter=list(names),
                                                   stop_at_layer=max(layers) + 1)
        return {L: cache[n].to("cpu", odt) for n, L in names.items()}

    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    out: dict = {}
    last = max(layers)

    def make_hook(L):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            t = h.detach().to("cpu", odt)
            out[L] = t.clone() if t.data_ptr() == h.data_ptr() else t
            if L == last:
                raise _StopForward

        return hook

    def pre_hook(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        out[EMBEDDINGS] = h.detach().to("cpu", odt, copy=True)

    handles = [blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)] if embeddings else []
    handles += [blocks[L].register_forward_hook(make_hook(L)) for L in layers]
    try:
        with torch.inference_mode():
            base(input_ids=ids, attention_mask=attn, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [L for L in layers if L not in out]
    if missing:  # pragma: no cover - a model whose blocks are not called in order
        raise RuntimeError(f"residual_stream: hooks on layers {missing} did not fire")
    return out


def residual_stream(loaded: LoadedModel, inputs, layers: int | Iterable[int], *, batch_size: int = 16,
                    seq_len: int | None = 256, add_bos: bool | None = None, drop_bos: bool = True,
                    flatten: bool | None = None, out_dtype: str | None = None, as_numpy: bool = False
                    ) -> dict:
    """Residual stream after decoder blocks ``layers``, all from one forward pass per batch.

    The value for layer ``L`` is the output of block ``L`` (TransformerLens ``blocks.L.hook_resid_post``),
    i.e. ``hidden_states[L + 1]`` of ``output_hidden_states=True``.  (For the last block, transformers
    reports the final-norm output as ``hidden_states[-1]``; this function returns the un-normed
    residual stream there too.)  The forward pass goes through the base model only — never the LM
    head — and stops after the deepest requested block.

    Parameters
    ----------
    loaded : LoadedModel
    inputs : str, sequence of str, 2-D int array/tensor or sequence of token-id rows
        Texts are tokenised without special tokens and get BOS prepended (``add_bos``); token-id
        rows are used as given unless ``add_bos=True``.
    layers : int or iterable of int
        Blocks ``0 .. n_layers - 1``; out of range raises InputError naming the valid range.
    batch_size : int, default=16
    seq_len : int or None, default=256
        Most tokens per row, not counting a leading BOS (so a 256-token block with its BOS fits).
        Longer texts are truncated; longer token-id rows raise InputError.  None = no limit.
    add_bos : bool or None, default=None
        Prepend BOS to each row. None means True for texts and False for token ids.
    drop_bos : bool, default=True
        Leave out position 0 of rows that start with BOS (its activations are extreme).
    flatten : bool or None, default=None
        True: return the real tokens of all rows concatenated, ``[n_tokens, d_model]``.
        False: return ``[n_rows, T, d_model]`` (rows must then have equal lengths, and either all
        or none start with a dropped BOS).  None means False for token ids and True for texts.
    out_dtype : str, optional
        dtype of the returned activations (default: the model's dtype).
    as_numpy : bool, default=False
        Return numpy arrays (bfloat16/float16 outputs become float32) instead of CPU tensors.

    Returns
    -------
    dict
        layer -> activations.

    Examples
    --------
    >>> lm = load_model()                                        # doctest: +SKIP
    >>> acts = residual_stream(lm, ["The cat sat."], [3, 9])     # doctest: +SKIP
    >>> acts[9].shape                                            # doctest: +SKIP
    torch.Size([4, 640])
    """
    import torch

    layers_ = check_layers(loaded, layers)
    seq_inputs = inputs
    if flatten is None:
        if isinstance(inputs, str):
            flatten = True
        elif hasattr(inputs, "shape"):  # array / tensor of token ids
            flatten = False
        else:
            import itertools

            try:
                it = iter(inputs)
            except TypeError:
                raise InputError(f"inputs: expected texts or token-id rows. Got {type(inputs).__name__} "
                                 "instead.") from None
            first = next(it, None)
            flatten = isinstance(first, str)
            seq_inputs = itertools.chain([first], it) if first is not None else []
    parts: dict[int, list] = {L: [] for L in layers_}
    n_rows = 0
    for b in iter_residual_stream(loaded, seq_inputs, layers_, batch_size=batch_size, seq_len=seq_len,
                                  add_bos=add_bos, drop_bos=drop_bos, out_dtype=out_dtype):
        n_rows += len(b.rows)
        if flatten:
            for L in layers_:
                parts[L].append(b.flat(L))
            continue
        # rows must be rectangular: no padding anywhere, and column 0 dropped for all rows or none
        dropped0 = ~b.mask[:, 0]
        if bool(dropped0.any()) and not bool(dropped0.all()):
            raise InputError("inputs: some rows start with BOS and others do not; expected consistent "
                             "rows, or flatten=True")
        body = b.mask[:, 1:] if bool(dropped0.all()) else b.mask
        if not bool(body.all()):
            raise InputError("inputs: rows have different lengths; expected equal-length rows for "
                             "flatten=False, or flatten=True")
        for L in layers_:
            a = b.acts[L]
            parts[L].append(a[:, 1:] if bool(dropped0.all()) else a)
    if n_rows == 0:
        raise InputError("inputs: no rows; expected at least one text or token-id row")
    result = {}
    for L in layers_:
        try:
            t = torch.cat(parts[L], 0)
        except RuntimeError:
            raise InputError("inputs: batches have different lengths; expected equal-length rows for "
                             "flatten=False, or flatten=True") from None
        if as_numpy:
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            t = t.numpy()
        result[L] = t
    return result


