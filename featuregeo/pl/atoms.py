"""Figures for the atom scale, read from :class:`~featuregeo.tl.atoms.AtomsResult` only
(matplotlib, Agg, imported lazily).

:func:`plot_all` writes, for every layer ``L``, into ``OUT/layer_L/``:

* ``atoms_differences.png`` — held-out difference vectors before and after LDA (:func:`differences_2d`);
* ``atoms_scores.png`` — held-out scores by method and ``n_components`` (:func:`scores_by_components`);
* ``atoms_crystals.png`` — the top crystals (:func:`crystal_examples`), when the crystal search ran;
* ``atoms_sae_differences.png``, ``atoms_sae_scores.png`` — the same for the SAE space, when analysed.
"""

from __future__ import annotations

from pathlib import Path

from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.atoms import best_score

FIGURES = ("differences", "scores", "crystals", "sae_differences", "sae_scores")


def _space(layer, space: str):
    """(methods, embedding) of one space of an AtomsLayer."""
    if space == "sae":
        if layer.sae_space is None:
            raise ValueError(f"layer {layer.layer} has no SAE-space analysis")
        return layer.sae_space.methods, layer.sae_space.embedding
    return layer.methods, layer.embedding


def _best(methods, method: str, metric: str):
    """The setting chosen on the validation split of the train pairs (never the best on test)."""
    return best_score(methods, method, metric)


def differences_2d(layer, path, *, space: str = "residual") -> Path:
    """Held-out difference vectors in 2-D before (PCA fitted on train) and after LDA, coloured by task.

    Parameters
    ----------
    layer : AtomsLayer
    path : path of the PNG
    space : {"residual", "sae"}, default="residual"

    Returns
    -------
    Path
    """
    import numpy as np

    plt = pyplot()
    methods, emb = _space(layer, space)
    task = np.asarray(emb.task, dtype=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    cmap = plt.get_cmap("tab10" if len(layer.task_names) <= 10 else "tab20")
    for ax, xy, title in ((axes[0], emb.raw_pca, "before: PCA of differences"), (axes[1], emb.lda, "after: LDA (train fit)")):
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        for k, name in enumerate(layer.task_names):
            sel = task == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(k % cmap.N), label=name, alpha=0.8)
        ax.set_title(title)
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    raw = next((r for r in methods if r.method == "raw"), None)
    best = _best(methods, "lda", "silhouette")
    if raw and best and raw.silhouette is not None:
        fig.suptitle(f"layer {layer.layer} ({space}), held-out pairs: silhouette {raw.silhouette:.2f} -> "
                     f"{best.silhouette:.2f} (LDA {best.n_components})", fontsize=10)
    axes[1].legend(fontsize=7, loc="best", markerscale=1.2)
    fig.tight_layout()
    return save_figure(fig, path)


def scores_by_components(layer, path, *, space: str = "residual") -> Path:
    """Held-out analogy accuracy, task accuracy and silhouette for each method and n_components.

    Parameters
    ----------
    layer : AtomsLayer
    path : path of the PNG
    space : {"residual", "sae"}, default="residual"

    Returns
    -------
    Path
    """
    plt = pyplot()
    methods, _ = _space(layer, space)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    metrics = (("analogy_accuracy", "analogy accuracy"), ("task_accuracy", "task accuracy"), ("silhouette", "silhouette"))
    raw = next((r for r in methods if r.method == "raw"), None)
    for ax, (key, label) in zip(axes, metrics):
        for method, style in (("lda", "o-"), ("pc_removed", "s--")):
            recs = sorted((r for r in methods if r.method == method and getattr(r, key) is not None),
                          key=lambda r: r.n_components)
            if recs:
                ax.plot([r.n_components for r in recs], [getattr(r, key) for r in recs], style,
                        label="LDA components kept" if method == "lda" else "PCs removed")
        if raw and getattr(raw, key) is not None:
            ax.axhline(getattr(raw, key), color="k", lw=1, ls=":", label="raw")
        ax.set_title(label)
        ax.set_xlabel("n_components")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"layer {layer.layer} ({space}): scores on held-out pairs", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def crystal_examples(crystals, path, n: int = 6) -> Path:
    """The top crystals drawn in the plane of their two sides (``a`` at the origin).

    Parameters
    ----------
    crystals : CrystalResult
    path : path of the PNG
    n : int, default=6

    Returns
    -------
    Path
    """
    import numpy as np

    plt = pyplot()
    ex = crystals.examples[:n]
    cols = max(1, min(3, len(ex)))
    rows = max(1, int(np.ceil(len(ex) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, e in zip(axes.ravel(), ex):
        ax.set_axis_on()
        xy = np.asarray(e.xy, dtype=float)
        a, b, c, d = xy
        ax.plot(*np.stack([a, b]).T, "-", color="C0", lw=2)
        ax.plot(*np.stack([c, d]).T, "-", color="C0", lw=2)
        ax.plot(*np.stack([a, c]).T, ":", color="grey")
        ax.plot(*np.stack([b, d]).T, ":", color="grey")
        for p, name in zip(xy, e.ids):
            ax.scatter(*p, color="C3", s=20)
            ax.annotate(str(name), p, fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"cos {e.cosine:.2f}, ratio {e.length_ratio:.2f}", fontsize=9)
    if not ex:
        axes[0, 0].text(0.5, 0.5, "no crystals found", ha="center", va="center")
    fig.suptitle(f"layer {crystals.layer}: top crystals (b - a ≈ d - c), feature ids", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_layer(layer, out_dir) -> dict[str, Path]:
    """Every figure of one :class:`~featuregeo.tl.atoms.AtomsLayer` into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    paths = {"differences": differences_2d(layer, out / "atoms_differences.png"),
             "scores": scores_by_components(layer, out / "atoms_scores.png")}
    if layer.crystals is not None:
        paths["crystals"] = crystal_examples(layer.crystals, out / "atoms_crystals.png")
    if layer.sae_space is not None:
        paths["sae_differences"] = differences_2d(layer, out / "atoms_sae_differences.png", space="sae")
        paths["sae_scores"] = scores_by_components(layer, out / "atoms_sae_scores.png", space="sae")
    return paths


def plot_all(result, out_dir) -> dict[int, dict[str, Path]]:
    """Every figure of an :class:`~featuregeo.tl.atoms.AtomsResult` into ``out_dir/layer_L/``.

    Returns
    -------
    dict of int to dict of str to Path
        Layer -> figure name (:data:`FIGURES`) -> path.
    """
    out = Path(out_dir)
    return {rec.layer: plot_layer(rec, out / f"layer_{rec.layer}") for rec in result.layers}


__all__ = ["FIGURES", "crystal_examples", "differences_2d", "plot_all", "plot_layer", "scores_by_components"]
