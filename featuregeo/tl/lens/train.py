"""Training tuned-lens translators: every layer in the same pass over streamed chunks of training tokens.

One step draws a minibatch of tokens (and, with a vocabulary subset, a sample of complement tokens)
and updates the translator of every layer on it; a layer's result does not depend on which other
layers train with it.  The objective is KL(p_final || q_lens) per token.  With a vocabulary
subset (the ``k`` tokens with the most final mass) both distributions are coarsened to the subset
plus one "rest" bucket whose mass is estimated, for both alike, from ``n_sample`` complement tokens
drawn uniformly per step (each standing for ``|complement| / n_sample`` tokens; a sampled softmax).
The same samples on both sides keep the estimate consistent: an exact cross term with a sampled
log-partition only on the lens side was tried and is biased (the log of a sampled sum
underestimates, most when the complement mass is concentrated).  With ``subset=None`` the loss is
the exact full-vocabulary KL.  Evaluation is always exact on the full vocabulary.

Optimiser: Adam (written out here so its state can be saved), linear decay to zero, gradient
clipping at 1.0 per layer, ``b`` in units of the layer's residual RMS, learning rate ``lr`` for
``b`` and ``lr / sqrt(d)`` for ``A`` (with ``lr`` for every entry of ``A`` an early step would
move the residual by ~``lr * d`` of its size and wreck late layers whose logit lens is already
good).  Seeded: step ``s`` draws its batch and samples from ``[seed, s]``.  Resumable: ``snapshot(state)`` after every chunk,
``resume=state`` continues bit-identically.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from featuregeo.io.lens_hooks import Readout

__all__ = ["train_lenses", "chunk_steps", "lens_loss", "coarse_logprobs", "translator"]


def _cap(readout: Readout, z):
    import torch

    return torch.tanh(z / readout.softcap) * readout.softcap if readout.softcap else z


def chunk_steps(steps: int, n_chunks: int, c: int) -> range:
    """The optimiser steps spent on chunk ``c`` (steps spread evenly over the chunks)."""
    return range(c * steps // n_chunks, (c + 1) * steps // n_chunks)


def _step_draws(seed: int, s: int, n: int, batch: int, rest, n_sample: int):
    import torch

    gen = torch.Generator().manual_seed(int(np.random.default_rng([int(seed), int(s)]).integers(2**62)))
    idx = torch.randperm(n, generator=gen)[:batch] if batch < n else torch.arange(n)
    cols = None
    if rest is not None and n_sample:
        cols = rest[torch.randint(0, int(rest.numel()), (n_sample,), generator=gen)]
    return idx, cols


def _coarse(readout: Readout, x, w_cols, b_cols, k: int, corr: float):
    """Logits of ``x`` on the subset (first ``k`` columns) plus one bucket for the sampled rest."""
    import torch

    l = (x.to(w_cols.dtype) @ w_cols.T).float()
    if b_cols is not None:
        l = l + b_cols
    l = _cap(readout, l)
    if l.shape[1] == k:
        return l
    return torch.cat([l[:, :k], torch.logsumexp(l[:, k:] + corr, -1, keepdim=True)], 1)


def lens_loss(x, lp, readout: Readout, w_cols, b_cols, k: int, corr: float):
    """Per-token coarsened KL(p || q) for normed lens states ``x`` [B, d] against ``lp`` = the final
    distribution's log-probabilities on the same columns (:func:`coarse_logprobs` of the last-block states)."""
    import torch

    logq = torch.log_softmax(_coarse(readout, x, w_cols, b_cols, k, corr), -1)
    return (lp.exp() * (lp - logq)).sum(-1)


def coarse_logprobs(readout: Readout, x, w_cols, b_cols, k: int, corr: float):
    """Log-probabilities on the subset plus the "rest" bucket (all columns when there is no subset)."""
    import torch

    return torch.log_softmax(_coarse(readout, x, w_cols, b_cols, k, corr), -1)


def _adam(p, g, m, v, t: int, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))


def train_lenses(source: Callable[[int], dict], n_chunks: int, layers, readout: Readout, *,
                 subset=None, n_sample: int = 1024, steps: int, batch: int, lr: float, seed: int,
                 dtype: str = "bfloat16", resume: dict | None = None,
                 snapshot: Callable[[dict], None] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Train one affine translator per layer of ``layers``, all in the same pass.

    Parameters
    ----------
    source : callable
        ``source(c) -> states`` for chunk ``c``: each layer (and the key ``"final"``, the last block)
        mapped to float32 hidden states [n_c, d] of the same tokens.
    n_chunks : int
    layers : sequence of int
    readout : Readout
    subset : array of int, optional
        Vocabulary subset for the log-partition (None: the full vocabulary, exact).
    n_sample : int
        Complement tokens drawn per step (0: the subset alone).
    steps, batch, lr, seed : optimiser steps (spread over the chunks), tokens per step, Adam
        learning rate (linear decay to zero), seed of the draws.
    dtype : {"bfloat16", "float32"}
        Precision of the unembedding matmuls.
    resume : dict, optional
        A state passed to ``snapshot`` by an interrupted run with the same inputs.
    snapshot : callable, optional
        Called with the full state (numpy arrays) after every chunk.

    Returns
    -------
    dict
        The final state: per layer ``A_<L>``, ``b_<L>`` (original units), ``loss_<L>`` [steps]
        (per-step training KL estimate, nats), plus the optimiser state.
    """
    import torch

    layers = [int(L) for L in layers]
    tdt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    W = readout.weight
    if subset is None:
        k, rest, corr, n_sample = readout.vocab, None, 0.0, 0
        w_sub, b_sub = W, readout.bias
    else:
        sub = torch.as_tensor(np.asarray(subset), dtype=torch.long)
        k = int(sub.numel())
        mask = torch.ones(readout.vocab, dtype=torch.bool)
        mask[sub] = False
        rest = mask.nonzero()[:, 0]
        n_sample = min(int(n_sample), int(rest.numel()))
        corr = float(np.log(rest.numel() / n_sample)) if n_sample else 0.0
        w_sub, b_sub = W[sub], None if readout.bias is None else readout.bias[sub]
    w_sub_t, W_t = w_sub.to(tdt), W.to(tdt)
    st = {key: np.array(val, copy=True) for key, val in (resume or {}).items()}
    d = readout.d_model
    for L in layers:
        if f"A_{L}" not in st:
            st[f"scale_{L}"] = np.float32(np.nan)  # set from the first chunk
            for key, shape in (("A", (d, d)), ("b", (d,))):
                for pre in ("", "m_", "v_"):
                    st[f"{pre}{key}_{L}"] = np.zeros(shape, np.float32)
            st[f"loss_{L}"] = np.zeros(steps, np.float32)
    P = {L: {key: torch.from_numpy(st[key]) for key in
             (f"A_{L}", f"b_{L}", f"m_A_{L}", f"v_A_{L}", f"m_b_{L}", f"v_b_{L}")} for L in layers}
    # Adam moves every entry of A by ~lr per step; a rank-one-like gradient aligns the signs, so h @ A.T
    # would move by ~lr * d * |h|: A's rate is lr / sqrt(d) (a few % of |h| per step at the start)
    lr_A = lr / float(np.sqrt(d))
    start = int(st.get("next_chunk", 0))
    every = max(1, steps // 10)
    for c in range(start, n_chunks):
        rng = chunk_steps(steps, n_chunks, c)
        if not len(rng):
            continue
        states = source(c)
        n = int(states["final"].shape[0])
        for L in layers:
            if not np.isfinite(st[f"scale_{L}"]):
                st[f"scale_{L}"] = np.float32(float(states[L].pow(2).mean().sqrt()) or 1.0)
        for s in rng:
            idx, cols = _step_draws(seed, s, n, batch, rest, n_sample)
            w_cols = w_sub_t if cols is None else torch.cat([w_sub_t, W_t[cols]])
            b_cols = None
            if readout.bias is not None:
                b_cols = b_sub.float() if cols is None else torch.cat([b_sub, readout.bias[cols]]).float()
            with torch.no_grad():
                lp = coarse_logprobs(readout, readout.norm(states["final"][idx]), w_cols, b_cols, k, corr)
            frac = max(0.0, 1.0 - s / max(1, steps))
            for L in layers:
                p = P[L]
                scale = float(st[f"scale_{L}"])
                A = p[f"A_{L}"].clone().requires_grad_(True)
                b = p[f"b_{L}"].clone().requires_grad_(True)
                h = states[L][idx]
                x = readout.norm(h + h @ A.T + b * scale)
                loss = lens_loss(x, lp, readout, w_cols, b_cols, k, corr).mean()
                gA, gb = torch.autograd.grad(loss, [A, b])
                norm = float(torch.sqrt(gA.pow(2).sum() + gb.pow(2).sum()))
                if norm > 1.0:
                    gA, gb = gA / norm, gb / norm
                with torch.no_grad():
                    _adam(p[f"A_{L}"], gA, p[f"m_A_{L}"], p[f"v_A_{L}"], s + 1, lr_A * frac)
                    _adam(p[f"b_{L}"], gb, p[f"m_b_{L}"], p[f"v_b_{L}"], s + 1, lr * frac)
                st[f"loss_{L}"][s] = float(loss.detach())
            if progress is not None and ((s + 1) % every == 0 or s + 1 == steps):
                kl = ", ".join(f"{L}: {st[f'loss_{L}'][s]:.3f}" for L in layers)
                progress(f"lens: tuned lens step {s + 1}/{steps} training KL by layer {{{kl}}}")
        st["next_chunk"] = np.int64(c + 1)
        if snapshot is not None:
            snapshot(st)
    st["next_chunk"] = np.int64(n_chunks)
    for L in layers:
        if not np.isfinite(st[f"scale_{L}"]):  # no step was run (steps == 0): the logit lens
            st[f"scale_{L}"] = np.float32(1.0)
    return st


def translator(state: dict, L: int) -> dict[str, np.ndarray]:
    """``A``, ``b`` (original units) and the per-step loss of layer ``L`` from a :func:`train_lenses` state."""
    return {"A": np.asarray(state[f"A_{L}"], np.float32),
            "b": (np.asarray(state[f"b_{L}"], np.float32) * np.float32(state[f"scale_{L}"])).astype(np.float32),
            "loss": np.asarray(state[f"loss_{L}"], np.float32)}
