"""Per-token lens metrics on the full vocabulary, and the block bootstrap.

For each predicted position and layer, with ``p`` the model's final distribution and ``q`` a lens's:

* ``ce`` — cross-entropy against the next token, ``-log q(next)`` (nats);
* ``kl`` — KL(p || q) (nats);
* ``entropy`` — entropy of ``q`` (nats);
* ``top1`` — 1 when ``argmax q == argmax p``.

Intervals: documents are the blocks; per-document means are resampled with replacement
(``n_boot`` times, seeded) and the 2.5 / 97.5 percentiles of the mean are reported.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from featuregeo.io.lens_hooks import Readout
from featuregeo.tl.lens.tuned import translate

__all__ = ["METRICS", "evaluate_lenses", "block_bootstrap"]

METRICS = ("ce", "kl", "entropy", "top1")


def _final_chunk(readout: Readout, h, block: int):
    """Exact (float32) final logits of a chunk, their log-partition, entropy and argmax."""
    import torch

    x = readout.norm(h).float()
    l = torch.cat([_logits32(readout, x, j, block) for j in range(0, readout.vocab, block)], 1)
    z = torch.logsumexp(l, -1, keepdim=True)
    p = torch.exp(l - z)
    ent = z[:, 0] - (p * l).sum(-1)
    return l, z[:, 0], p, ent, l.argmax(-1)


def _logits32(readout: Readout, x, j: int, block: int):
    import torch

    out = x @ readout.weight[j:j + block].float().T
    if readout.bias is not None:
        out += readout.bias[j:j + block].float()
    return torch.tanh(out / readout.softcap) * readout.softcap if readout.softcap else out


def _lens_chunk(readout: Readout, X, p, W, block: int):
    """Log-partition, entropy, argmax and ``sum_v p_v l_v`` of lens rows ``X`` [c, s, d] (normed states of ``s``
    lenses at ``c`` tokens) against the final probabilities ``p`` [c, V], one vocabulary block at a time."""
    import torch

    c, s, d = X.shape
    Xf = X.reshape(c * s, d).to(W.dtype)
    M = torch.full((c * s, 1), -float("inf"))
    S = torch.zeros(c * s, 1, dtype=torch.float64)
    E = torch.zeros(c * s, 1, dtype=torch.float64)
    C = torch.zeros(c, s, dtype=torch.float64)
    top = torch.zeros(c * s, dtype=torch.long)
    for j in range(0, readout.vocab, block):
        lj = (Xf @ W[j:j + block].T).float()
        if readout.bias is not None:
            lj += readout.bias[j:j + block].float()
        if readout.softcap:
            lj = torch.tanh(lj.div_(readout.softcap)).mul_(readout.softcap)
        mj, aj = lj.max(-1, keepdim=True)
        better = mj[:, 0] > M[:, 0]
        top = torch.where(better, aj[:, 0] + j, top)
        Mn = torch.maximum(M, mj)
        r = torch.exp(M - Mn).double()
        e = (lj - Mn).exp_()
        S = S * r + e.sum(-1, keepdim=True).double()
        E = E * r + torch.bmm(e.unsqueeze(1), lj.unsqueeze(2))[:, 0].double()
        C += torch.bmm(lj.view(c, s, -1), p[:, j:j + block].unsqueeze(2))[:, :, 0].double()
        M = Mn
    logz = M.double() + S.log()
    ent = logz - E / S
    return logz.view(c, s), ent.view(c, s), top.view(c, s), C


def evaluate_lenses(states: np.ndarray, final_index: int, targets: np.ndarray, readout: Readout,
                    translators: dict, *, chunk: int = 32, block: int = 4096, dtype: str = "bfloat16", subset=None,
                    progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Logit-lens and tuned-lens metrics for every token and layer, on the full vocabulary.

    The final distribution is computed in float32 (exact); the lens logits of all layers and both
    lenses at ``chunk`` tokens go through one matmul per vocabulary block of ``block`` entries, whose
    log-partition, entropy, argmax and cross term ``sum_v p_v l_v`` are accumulated online (no
    ``[tokens x vocab]`` array per lens is ever held).  ``KL = sum p log p - sum p l + logZ``,
    ``CE = logZ - l[next]`` (the next-token logit in float32).

    Parameters
    ----------
    states : ndarray [n_layers_read, n_rows, T, d]
        Hidden states at the predicted positions.
    final_index : int
        Index (into the first axis) of the model's last block: its logit lens is the final distribution.
    targets : ndarray [n_rows, T] of int
        Next token at each position.
    readout : Readout
    translators : dict index -> (A, b)
        Tuned-lens translators (torch) per index of the first axis; a missing index uses the identity.
    chunk, block : int
        Tokens per pass and vocabulary entries per matmul.
    dtype : {"bfloat16", "float32"}, default="bfloat16"
        Precision of the lens unembedding matmul (the final distribution is always float32).
    subset : ndarray of int, optional
        A vocabulary subset whose final-distribution mass is reported per token.

    Returns
    -------
    dict
        ``logit`` and ``tuned``: [n_layers_read, n_rows, T, 4] (METRICS order); ``subset_mass``:
        [n_rows, T] (NaN without a subset).
    """
    import torch

    nL, R, T, d = states.shape
    N = R * T
    flat = states.reshape(nL, N, d)
    tgt = torch.as_tensor(np.asarray(targets).reshape(N), dtype=torch.long)
    W = readout.weight.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    Wt32 = readout.weight.float()
    out = {"logit": np.zeros((nL, N, 4)), "tuned": np.zeros((nL, N, 4)), "subset_mass": np.full(N, np.nan)}
    sub = None if subset is None else torch.as_tensor(np.asarray(subset), dtype=torch.long)
    others = [i for i in range(nL) if i != final_index]
    tuned = [i for i in others if i in translators]
    with torch.no_grad():
        for j in range(0, N, chunk):
            sl = slice(j, min(N, j + chunk))
            c = sl.stop - sl.start
            lf, zf, p, entf, topf = _final_chunk(readout, torch.as_tensor(flat[final_index, sl]), block)
            plogp = -entf.double()
            t_sl = tgt[sl]
            fin = torch.stack([zf - lf.gather(1, t_sl[:, None])[:, 0], torch.zeros(c), entf, torch.ones(c)], 1)
            out["logit"][final_index, sl] = out["tuned"][final_index, sl] = fin.double().numpy()
            if sub is not None:
                out["subset_mass"][sl] = p[:, sub].sum(-1).double().numpy()
            del lf
            xs = []
            for i in others:
                xs.append(readout.norm(torch.as_tensor(flat[i, sl])))
            for i in tuned:
                A, b = translators[i]
                xs.append(readout.norm(translate(torch.as_tensor(flat[i, sl]), A, b)))
            if not xs:
                continue
            X = torch.stack(xs, 1).float()  # [c, s, d]
            logz, ent, top, cross = _lens_chunk(readout, X, p, W, block)
            lt = _logits_at(readout, X, t_sl, Wt32)  # [c, s] float32 next-token logits
            ce = logz - lt.double()
            kl = (plogp[:, None] - cross + logz).clamp_min(0.0)
            agree = (top == topf[:, None]).double()
            m = torch.stack([ce, kl, ent, agree], -1).numpy()  # [c, s, 4]
            for k, i in enumerate(others):
                out["logit"][i, sl] = m[:, k]
                out["tuned"][i, sl] = m[:, k]
            for k, i in enumerate(tuned):
                out["tuned"][i, sl] = m[:, len(others) + k]
            if progress is not None and (j // chunk) % 32 == 31:
                progress(f"lens: evaluated {sl.stop}/{N} tokens")
    return {"logit": out["logit"].reshape(nL, R, T, 4), "tuned": out["tuned"].reshape(nL, R, T, 4),
            "subset_mass": out["subset_mass"].reshape(R, T)}


def _logits_at(readout: Readout, X, ids, W32):
    """Float32 logits of ``X`` [c, s, d] at one vocabulary entry per token ``ids`` [c]."""
    import torch

    w = W32[ids]  # [c, d]
    out = torch.bmm(X, w.unsqueeze(2))[:, :, 0]
    if readout.bias is not None:
        out = out + readout.bias[ids].float()[:, None]
    return torch.tanh(out / readout.softcap) * readout.softcap if readout.softcap else out


def block_bootstrap(per_token: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean and 95 % interval of ``per_token`` [n_blocks, T] by resampling whole blocks.

    Returns
    -------
    (mean, low, high)
    """
    x = np.asarray(per_token, dtype=np.float64)
    means = x.mean(axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(means), size=(n_boot, len(means)))
    boots = means[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(means.mean()), float(lo), float(hi)
