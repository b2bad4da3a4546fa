"""Figures of a :class:`~featuregeo.tl.lens.LensResult` (reading the result only).

* ``lens_curves.png`` — per-layer KL to the final distribution, cross-entropy, entropy and top-1
  agreement for the logit lens and the tuned lens, with their 95 % intervals;
* ``lens_trajectory.png`` — the top token per layer and position of one sentence (logit lens left,
  tuned lens right), coloured by its probability;
* ``lens_probes.png`` — probe accuracy, control accuracy and selectivity per layer (when probes ran).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.pl.base import pyplot, save_figure

__all__ = ["CURVES", "TRAJECTORY", "PROBES", "figure_names", "plot_curves", "plot_trajectory", "plot_probes",
           "plot_all"]

CURVES = "lens_curves.png"
TRAJECTORY = "lens_trajectory.png"
PROBES = "lens_probes.png"
_COLORS = {"logit": "tab:orange", "tuned": "tab:blue"}


def figure_names(result) -> dict[str, str]:
    """Figure kind -> stable file name for ``result``."""
    names = {"curves": CURVES}
    if result.trajectory is not None and result.trajectory.tokens:
        names["trajectory"] = TRAJECTORY
    if any(rec.probes for rec in result.layers):
        names["probes"] = PROBES
    return names


def plot_curves(result, path: str | Path) -> Path:
    """Per-layer curves of the four metrics for both lenses, with 95 % bootstrap intervals."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    layers = [rec.layer for rec in result.layers]
    titles = {"kl": "KL(final || lens) [nats]", "ce": "cross-entropy [nats]", "entropy": "entropy [nats]",
              "top1": "top-1 agreement with final"}
    for ax, m in zip(axes, ("kl", "ce", "entropy", "top1")):
        for lens in ("logit", "tuned"):
            iv = [getattr(getattr(rec, lens), m) for rec in result.layers]
            mean = np.array([x.mean for x in iv])
            ax.plot(layers, mean, marker="o", ms=3, color=_COLORS[lens], label=f"{lens} lens")
            ax.fill_between(layers, [x.low for x in iv], [x.high for x in iv], color=_COLORS[lens], alpha=0.25)
        ax.set_title(titles[m], fontsize=10)
        ax.set_xlabel("layer (block output)")
        if m == "kl":
            ax.set_yscale("symlog", linthresh=0.1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.model}: logit lens vs tuned lens on {result.n_eval_tokens} held-out tokens "
                 f"({result.n_eval_docs} documents)", fontsize=11)
    return save_figure(fig, path)


def plot_trajectory(result, path: str | Path) -> Path:
    """Top token per layer and position of the trajectory sentence, both lenses side by side."""
    plt = pyplot()
    tr = result.trajectory
    n_l, n_p = tr.logit_prob.shape
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * n_p) * 2 * 0.6, 0.35 * n_l + 2.2))
    for ax, name, top, prob in ((axes[0], "logit lens", tr.logit_top, tr.logit_prob),
                                (axes[1], "tuned lens", tr.tuned_top, tr.tuned_prob)):
        ax.imshow(prob, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower")
        for i in range(n_l):
            for j in range(n_p):
                ax.text(j, i, top[i][j].strip()[:7] or repr(top[i][j])[1:-1][:7], ha="center", va="center",
                        fontsize=6, color="white" if prob[i, j] > 0.6 else "black")
        ax.set_xticks(range(n_p))
        ax.set_xticklabels([t.strip()[:8] for t in tr.tokens], rotation=60, fontsize=7)
        ax.set_yticks(range(n_l))
        ax.set_yticklabels(tr.layers, fontsize=7)
        ax.set_ylabel("layer")
        ax.set_title(f"{name}: top next token (colour: probability)", fontsize=10)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        return save_figure(fig, path)


def plot_probes(result, path: str | Path) -> Path:
    """Probe accuracy, control accuracy and chance per layer, one panel per task."""
    plt = pyplot()
    tasks = sorted({p.task for rec in result.layers for p in rec.probes})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        pts = [(rec.layer, p) for rec in result.layers for p in rec.probes if p.task == task]
        xs = [L for L, _ in pts]
        ax.plot(xs, [p.accuracy for _, p in pts], marker="o", ms=3, label="probe")
        ax.plot(xs, [p.control for _, p in pts], marker="s", ms=3, label="control task")
        ax.plot(xs, [p.chance for _, p in pts], ls=":", color="gray", label="majority class")
        ax.set_title(f"{task}: held-out accuracy", fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_all(result, out: str | Path) -> dict[str, Path]:
    """Write every figure of ``result`` into ``out`` under :func:`figure_names`."""
    out = Path(out)
    names = figure_names(result)
    funcs = {"curves": plot_curves, "trajectory": plot_trajectory, "probes": plot_probes}
    return {k: funcs[k](result, out / v) for k, v in names.items()}
