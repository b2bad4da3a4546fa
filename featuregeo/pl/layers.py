"""Figures of the layer comparison, drawn from a :class:`~featuregeo.tl.layers.LayersResult` only.

Every function takes the result first and a path and never computes science.  Standard file names
(written by :func:`plot_all`): ``layers_<measure>.png`` per measure, ``layers_pruning.png`` (with a
pruning table), ``layers_matching.png`` (with an SAE matching table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.layers import LayersResult

TITLES = {"cosine": "mean token cosine", "cka": "linear CKA", "uas": "StructLens UAS (edge agreement)",
          "ted": "StructLens tree-edit similarity 1 - TED/2n", "ted_distance": "StructLens TED / 2n"}

__all__ = ["TITLES", "figure_names", "heatmap", "pruning", "matching", "plot_all"]


def figure_names(result: LayersResult) -> dict[str, str]:
    """The figures :func:`plot_all` draws for ``result``: key -> file name."""
    names = {f"fig_{m}": f"layers_{m}.png" for m in result.params.measures}
    if result.pruning is not None:
        names["fig_pruning"] = "layers_pruning.png"
    if result.sae is not None and result.sae.pairs:
        names["fig_matching"] = "layers_matching.png"
    return names


def heatmap(result: LayersResult, measure: str, path: str | Path) -> Path:
    """Layer x layer matrix of one measure; the redundancy score of each block on the side."""
    plt = pyplot()
    M = result.matrix(measure)
    labels = result.labels
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.15, 1]},
                                  layout="constrained")
    im = ax.imshow(M, cmap="viridis", origin="upper")
    step = max(1, len(labels) // 10)
    ticks = np.arange(0, len(labels), step)
    ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=7, rotation=90)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)
    ax.set_xlabel("representation (output of block; 'embed' = input of block 0)")
    ax.set_title(TITLES.get(measure, measure), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    red = result.redundancy.get(measure)
    if red:
        by = sorted(red, key=lambda r: r.block)
        ax2.bar([r.block for r in by], [r.score for r in by], color="0.6")
        top = red[:3]
        ax2.bar([r.block for r in top], [r.score for r in top], color="tab:red", label="most redundant")
        ax2.set_xlabel("block L")
        from matplotlib.ticker import MaxNLocator

        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_ylabel("sim(input, output) of block L")
        ax2.legend(fontsize=8)
    else:
        ax2.axis("off")
    fig.suptitle(f"{result.model}: {measure}", fontsize=10)
    return save_figure(fig, path)


def pruning(result: LayersResult, path: str | Path) -> Path:
    """Held-out loss against the number of dropped blocks, per measure, with random drops (mean and each)."""
    p = result.pruning
    if p is None:
        raise InputError("result: has no pruning table; expected a layers result with prune_max >= 1")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    methods = list(dict.fromkeys(r.method for r in p.table))
    for k, m in enumerate(methods):
        rows = sorted((r for r in p.table if r.method == m), key=lambda r: r.n_drop)
        ax.plot([0] + [r.n_drop for r in rows], [p.baseline] + [r.loss for r in rows], "o-",
                label=m, alpha=0.85, ms=4 + (len(methods) - k))
    rs = [s for s in p.random_summary if s.mean is not None]
    if rs:
        n = np.array([0] + [s.n_drop for s in rs])
        mu = np.array([p.baseline] + [s.mean for s in rs])
        ax.plot(n, mu, "k--", label=f"random drops (mean of {rs[0].n})")
        ax.scatter([r.n_drop + 0.04 for r in p.random], [r.loss for r in p.random], s=10, color="k", alpha=0.35,
                   label="random drops (each)")
    ax.axhline(p.baseline, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("blocks dropped")
    ax.set_xticks(range(0, p.prune_max + 1))
    ax.set_ylabel("held-out next-token loss (nats/token)")
    ax.set_yscale("log")
    ax.set_title(f"pruning the most redundant blocks ({p.n_tokens} tokens)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def matching(result: LayersResult, path: str | Path) -> Path:
    """Fraction of features persisting to the next SAE layer (and appearing), real vs rotation null;
    pooled best-match cosine distributions; galaxy slope per SAE layer."""
    s = result.sae
    if s is None or not s.pairs:
        raise InputError("result: has no SAE matching table; expected a layers result computed with an SAE suite")
    plt = pyplot()
    pairs = s.pairs
    th = list(s.thresholds)
    k = min(range(len(th)), key=lambda i: abs(th[i] - 0.5))
    x = np.arange(len(pairs))
    names = [f"{q.layer_a}->{q.layer_b}" for q in pairs]
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
    ax.plot(x, [q.real.frac_persist[k] for q in pairs], "o-", label=f"persist (best cos > {th[k]:g})")
    ax.plot(x, [q.real.frac_appear[k] for q in pairs], "s-", label="appear (no match in previous layer)")
    if pairs[0].real.frac_assigned is not None:
        ax.plot(x, [q.real.frac_assigned[k] for q in pairs], "^-", label="one-to-one assigned cos > thr")
    if pairs[0].null is not None:
        ax.plot(x, [q.null.frac_persist[k] for q in pairs], "k--", label="persist, rotation null")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("fraction of features")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("feature matching between adjacent SAE layers", fontsize=10)
    edges = np.asarray(s.hist_edges)
    mid = (edges[:-1] + edges[1:]) / 2
    ax2.plot(mid, np.sum([q.real.best_hist for q in pairs], 0), label="best match")
    if pairs[0].real.assigned_hist is not None:
        ax2.plot(mid, np.sum([q.real.assigned_hist for q in pairs], 0), label="one-to-one")
    if pairs[0].null is not None:
        ax2.plot(mid, np.sum([q.null.best_hist for q in pairs], 0), "k--", label="best match, null")
    ax2.set_xlabel("cosine")
    ax2.set_ylabel("features (all adjacent pairs)")
    ax2.legend(fontsize=7)
    lay = s.layers
    slope = np.array([np.nan if r.slope is None else r.slope for r in lay], dtype=float)
    lo = np.array([r.slope - r.slope_ci[0] if r.slope_ci and r.slope is not None else 0.0 for r in lay], dtype=float)
    hi = np.array([r.slope_ci[1] - r.slope if r.slope_ci and r.slope is not None else 0.0 for r in lay], dtype=float)
    ax3.errorbar([r.layer for r in lay], slope, yerr=np.abs(np.vstack([lo, hi])), fmt="o-", ms=3, capsize=2)
    ax3.set_xlabel("SAE layer")
    ax3.set_ylabel("galaxy power-law slope" + (" (95% CI)" if any(r.slope_ci for r in lay) else ""))
    return save_figure(fig, path)


def plot_all(result: LayersResult, out: str | Path) -> dict[str, Path]:
    """Every figure the result supports, under the names of :func:`figure_names`; returns key -> path."""
    out = Path(out)
    paths = {}
    for key, name in figure_names(result).items():
        if key == "fig_pruning":
            paths[key] = pruning(result, out / name)
        elif key == "fig_matching":
            paths[key] = matching(result, out / name)
        else:
            paths[key] = heatmap(result, key[4:], out / name)
    return paths
