"""Figures of the layer-update analysis, drawn from an :class:`~featuregeo.tl.updates.UpdatesResult` only.

Standard file names (written by :func:`plot_all`): ``updates_alignment.png`` (per transition:
explained energy, cos(D, T) and cos(D, R), projections onto the dominant tokenwise subspace, with the
controls), ``updates_spearman.png`` (Spearman of |R| with the output KL, 95 % bootstrap intervals, and
the |D| control) and ``updates_sensitivity.png`` (explained energy against k and rank).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.updates import UpdatesResult

__all__ = ["figure_names", "alignment", "spearman", "sensitivity", "plot_all"]

COLORS = {"diag": "tab:blue", "lowrank": "tab:orange", "global": "tab:green"}


def figure_names(result: UpdatesResult) -> dict[str, str]:
    """The figures :func:`plot_all` draws for ``result``: key -> file name."""
    names = {"fig_alignment": "updates_alignment.png"}
    if any(rec.function for rec in result.layers):
        names["fig_spearman"] = "updates_spearman.png"
    if any(rec.sensitivity for rec in result.layers):
        names["fig_sensitivity"] = "updates_sensitivity.png"
    return names


def _x(result: UpdatesResult) -> np.ndarray:
    return np.array([rec.layer for rec in result.layers])


def alignment(result: UpdatesResult, path: str | Path) -> Path:
    """Per transition: explained energy (with controls), cos(D,T) vs cos(D,R), projections of T and R."""
    if not result.layers:
        raise InputError("result: has no transitions; expected an updates result with at least one layer")
    plt = pyplot()
    x = _x(result)
    classes = [f.cls for f in result.layers[0].fits]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
    ax = axes[0]
    for c in classes:
        ax.plot(x, [rec.fit(c).explained for rec in result.layers], "o-", ms=3, color=COLORS.get(c), label=c)
    p = result.params.primary
    styles = {("mlp", "knn"): ("k--", "MLP update (control)"), ("attn", "knn"): ("k:", "attention update (control)"),
              ("update", "shuffled"): ("r-.", "shuffled neighbours (control)")}
    for key, (st, lab) in styles.items():
        ys = [next((f.explained for f in rec.controls if (f.target, f.neighbours) == key), np.nan)
              for rec in result.layers]
        ax.plot(x, ys, st, label=f"{lab}, {p}")
    ax.set_ylabel("explained energy 1 - |R|²/|D|²")
    ax.set_title("tokenwise part of each update", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for c in classes:
        ax.plot(x, [rec.fit(c).cos_dt for rec in result.layers], "o-", ms=3, color=COLORS.get(c), label=f"cos(D,T) {c}")
        ax.plot(x, [rec.fit(c).cos_dr for rec in result.layers], "s--", ms=3, color=COLORS.get(c), alpha=0.6,
                label=f"cos(D,R) {c}")
    ax.set_ylabel("mean cosine over tokens")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("alignment of the update with T and with R", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    for c in classes:
        ax.plot(x, [rec.fit(c).proj_t for rec in result.layers], "o-", ms=3, color=COLORS.get(c), label=f"T {c}")
        ax.plot(x, [rec.fit(c).proj_r for rec in result.layers], "s--", ms=3, color=COLORS.get(c), alpha=0.6,
                label=f"R {c}")
    ax.plot(x, [rec.fit(p).chance for rec in result.layers], "k:", label=f"chance (dim/d), {p}")
    ax.set_ylabel("fraction of energy in the dominant tokenwise subspace")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("projection onto the top PCs of T (90% energy)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.set_xlabel("transition l -> l+1 (update of block l+1)")
    fig.suptitle(f"{result.model}: {result.params.n_tokens} held-out tokens, k {result.params.k}, "
                 f"rank {result.params.rank}", fontsize=10)
    return save_figure(fig, path)


def spearman(result: UpdatesResult, path: str | Path) -> Path:
    """Spearman of |R| (and of |D|, a control) with the KL of the final distribution, per transition."""
    recs = [rec for rec in result.layers if rec.function]
    if not recs:
        raise InputError("result: has no function part; expected an updates result with kl_classes")
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    x = np.array([rec.layer for rec in recs])
    for j, fn0 in enumerate(recs[0].function):
        c = fn0.cls
        fns = [rec.func(c) for rec in recs]
        y = np.array([f.spearman for f in fns])
        lo = np.array([f.spearman_ci[0] if f.spearman_ci else np.nan for f in fns])
        hi = np.array([f.spearman_ci[1] if f.spearman_ci else np.nan for f in fns])
        off = (j - 0.5) * 0.15
        ax.errorbar(x + off, y, yerr=np.abs(np.vstack([y - lo, hi - y])), fmt="o-", ms=3, capsize=2,
                    color=COLORS.get(c), label=f"|R| vs KL, {c}")
        ax.plot(x + off, [f.spearman_norm for f in fns], "x:", color=COLORS.get(c), label=f"|D| vs KL (control), {c}")
        ax2.plot(x, [f.kl_median for f in fns], "o-", ms=3, color=COLORS.get(c), label=f"median KL, {c}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("Spearman correlation (95% bootstrap CI over rows)")
    ax.set_title("does the tokenwise error predict the output perturbation?", fontsize=10)
    ax.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("KL(clean || T patched at one position), nats")
    ax2.legend(fontsize=7)
    for a in (ax, ax2):
        a.set_xlabel("transition l -> l+1")
    return save_figure(fig, path)


def sensitivity(result: UpdatesResult, path: str | Path) -> Path:
    """Explained energy against the neighbour count k and the rank, one line per transition."""
    recs = [rec for rec in result.layers if rec.sensitivity]
    if not recs:
        raise InputError("result: has no sensitivity fits; expected an updates result with k_grid or rank_grid")
    plt = pyplot()
    p = result.params
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    cmap = plt.get_cmap("viridis")
    panels = [("diag", "k", "diag: explained vs k"), ("lowrank", "k", f"lowrank (rank {p.rank}): explained vs k"),
              ("lowrank", "rank", f"lowrank (k {p.k}): explained vs rank")]
    for ax, (cls, var, title) in zip(axes, panels):
        for i, rec in enumerate(recs):
            mine = [f for f in rec.sensitivity if f.cls == cls]  # k_grid first, then (lowrank) rank_grid
            pts = mine[len(p.k_grid):] if var == "rank" else mine[:len(p.k_grid)]
            if pts:
                ax.plot([getattr(f, var) for f in pts], [f.explained for f in pts], "o-", ms=3,
                        color=cmap(i / max(1, len(recs) - 1)), label=f"{rec.layer}->{rec.block}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(var)
        ax.set_ylabel("explained energy")
        ax.set_title(title, fontsize=10)
    axes[-1].legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def plot_all(result: UpdatesResult, out: str | Path) -> dict[str, Path]:
    """Every figure the result supports, under the names of :func:`figure_names`; returns key -> path."""
    out = Path(out)
    draw = {"fig_alignment": alignment, "fig_spearman": spearman, "fig_sensitivity": sensitivity}
    return {key: draw[key](result, out / name) for key, name in figure_names(result).items()}
