"""Figures of functional lobes, drawn from a :class:`~featuregeo.tl.lobes.LobesResult` only.

The per-layer functions take a :class:`~featuregeo.tl.lobes.LobesLayer` first and a path, read its
``records``, ``genre_tables``, ``lobe_labels`` and ``map_2d``, and never compute science.
:func:`plot_all` draws every layer of a :class:`~featuregeo.tl.lobes.LobesResult` into
``OUT/layer_L/`` with the standard names ``lobes_ami.png``, ``lobes_balanced_accuracy.png``,
``lobes_map.png`` and ``lobes_genres.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.core.errors import InputError
from featuregeo.tl.lobes import LobesLayer, LobesResult
from featuregeo.pl.base import pyplot, save_figure


#: file names of the per-layer figures
FIGURES = {"ami": "lobes_ami.png", "balanced_accuracy": "lobes_balanced_accuracy.png", "map": "lobes_map.png",
           "genre_heatmap": "lobes_genres.png"}


def _nan(v) -> float:
    return np.nan if v is None else float(v)


def _series(result: LobesLayer, key: str) -> dict[str, tuple[np.ndarray, ...]]:
    """affinity -> (n_clusters, value, null mean, null std, sigma) over records where ``key`` is set."""
    out: dict[str, list] = {}
    null = key.replace("_bal_acc", "")  # "ami" or "logreg"
    for r in result.records:
        if getattr(r, key) is None:
            continue
        out.setdefault(r.affinity, []).append((r.n_clusters, getattr(r, key), _nan(getattr(r, f"{null}_null_mean")),
                                               _nan(getattr(r, f"{null}_null_std")), _nan(getattr(r, f"{null}_sigma"))))
    return {a: tuple(np.array(v, dtype=float).T) for a, v in out.items()}


def _sweep_axes(ax, title: str, ylabel: str, ks: list | None = None) -> None:
    ax.set_xscale("log", base=2)
    if ks:
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
    ax.set_xlabel("number of lobes (n_clusters)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def ami_vs_clusters(result: LobesLayer, path: str | Path) -> Path:
    """AMI between co-occurrence and geometry lobes per affinity, with the permutation null (mean +- 2 std)."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for aff, (k, v, m, s, sig) in _series(result, "ami").items():
        (line,) = ax.plot(k, v, marker="o", label=aff)
        ax.fill_between(k, m - 2 * s, m + 2 * s, color=line.get_color(), alpha=0.15)
        ax2.plot(k, sig, marker="o", color=line.get_color(), label=aff)
    _sweep_axes(ax, "Co-occurrence vs geometry lobes (shaded: permutation null +- 2 sd)", "AMI", result.n_clusters)
    _sweep_axes(ax2, "Significance", "sigma = (AMI - null mean) / null sd", result.n_clusters)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def balanced_accuracy_vs_clusters(result: LobesLayer, path: str | Path) -> Path:
    """Held-out balanced accuracy of lobe prediction from decoder rows, with the random-geometry null."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = _series(result, "logreg_bal_acc")
    for aff, (k, v, m, s, _) in series.items():
        (line,) = ax.plot(k, v, marker="o", label=aff)
        ax.plot(k, m, ls="--", color=line.get_color(), lw=1)
        ax.fill_between(k, m - 2 * s, m + 2 * s, color=line.get_color(), alpha=0.15)
    _sweep_axes(ax, "Lobe from decoder row (dashed: Gaussian-geometry null)", "balanced accuracy (test split)",
                result.n_clusters)
    if series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no logistic-regression records", ha="center", transform=ax.transAxes)
    return save_figure(fig, path)


def _pick(result: LobesLayer, affinity: str | None, n_clusters: int | None) -> tuple[str, int]:
    if not result.records and affinity is None:
        raise InputError("result: no lobe records to plot; expected a LobesLayer from featuregeo.tl.lobes")
    aff = affinity or result.records[0].affinity
    k = n_clusters or min(result.n_clusters)
    return aff, k


def lobe_map(result: LobesLayer, path: str | Path, *, affinity: str | None = None,
             n_clusters: int | None = None) -> Path:
    """Decoder rows on their first two principal components, coloured by co-occurrence lobe."""
    plt = pyplot()
    aff, k = _pick(result, affinity, n_clusters)
    xy = np.asarray(result.map_2d)
    lab = result.labels(aff, k)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "nipy_spectral")
    ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap=cmap, s=4, alpha=0.7, linewidths=0)
    ax.set_xlabel("PC 1 of unit decoder rows")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{k} {aff} lobes in decoder space")
    return save_figure(fig, path)


def genre_heatmap(result: LobesLayer, path: str | Path, *, affinity: str | None = None,
                  n_clusters: int | None = None) -> Path:
    """Held-out genre x winning-lobe table, each genre's row as fractions of its blocks."""
    plt = pyplot()
    aff, k = _pick(result, affinity, n_clusters)
    t = result.genre_table(aff, k)
    n_genres = len(t.genres) if t is not None else 4
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * k + 3), max(3.0, 0.35 * n_genres + 1.5)))
    if t is None or n_genres < 2:
        note = t.note if t is not None else "no held-out genre table for this lobe count"
        ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return save_figure(fig, path)
    tab = np.asarray(t.table, dtype=float)
    frac = tab / np.maximum(tab.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(t.genres)), t.genres, fontsize=8)
    ax.set_xticks(range(tab.shape[1]))
    ax.set_xlabel("winning lobe")
    if tab.shape[1] <= 16:
        for (i, j), v in np.ndenumerate(frac):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    v = t.cramers_v
    ax.set_title(f"Held-out genre -> {aff} lobe ({k} lobes)" + (f", Cramer's V = {v:.2f}" if v is not None else ""))
    fig.colorbar(im, ax=ax, label="fraction of the genre's blocks")
    return save_figure(fig, path)


def plot_layer(result: LobesLayer, out_dir: str | Path, *, affinity: str | None = None,
               n_clusters: int | None = None) -> dict[str, Path]:
    """The four figures of one layer into ``out_dir`` (names in :data:`FIGURES`)."""
    out = Path(out_dir)
    return {
        "ami": ami_vs_clusters(result, out / FIGURES["ami"]),
        "balanced_accuracy": balanced_accuracy_vs_clusters(result, out / FIGURES["balanced_accuracy"]),
        "map": lobe_map(result, out / FIGURES["map"], affinity=affinity, n_clusters=n_clusters),
        "genre_heatmap": genre_heatmap(result, out / FIGURES["genre_heatmap"], affinity=affinity,
                                       n_clusters=n_clusters),
    }


def plot_all(result: LobesResult, out_dir: str | Path, *, affinity: str | None = None,
             n_clusters: int | None = None) -> dict[int | None, dict[str, Path]]:
    """Every layer's figures into ``out_dir/layer_L/`` (``out_dir/layer_none/`` for a layer of unknown number).

    Returns
    -------
    dict layer -> dict figure name -> path
    """
    out = Path(out_dir)
    return {rec.layer: plot_layer(rec, out / f"layer_{'none' if rec.layer is None else rec.layer}",
                                  affinity=affinity, n_clusters=n_clusters) for rec in result.layers}


__all__ = ["FIGURES", "ami_vs_clusters", "balanced_accuracy_vs_clusters", "lobe_map", "genre_heatmap", "plot_layer",
           "plot_all"]
