"""Figures for the atom scale, read from :class:`~featuregeo.tl.atoms.AtomResult` and
:class:`~featuregeo.tl.atoms.CrystalResult` only (matplotlib, Agg, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from featuregeo.pl.base import pyplot, save_figure


def differences_2d(result, path) -> Path:
    """Held-out difference vectors in 2-D before (PCA fitted on train) and after LDA, coloured by task."""
    import numpy as np

    plt = pyplot()
    emb = result.embedding
    task = np.asarray(emb.get("task", []), dtype=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    cmap = plt.get_cmap("tab10" if len(result.task_names) <= 10 else "tab20")
    for ax, key, title in ((axes[0], "raw_pca", "before: PCA of differences"), (axes[1], "lda", "after: LDA (train fit)")):
        xy = np.asarray(emb.get(key, []), dtype=float).reshape(-1, 2)
        for k, name in enumerate(result.task_names):
            sel = task == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(k % cmap.N), label=name, alpha=0.8)
        ax.set_title(title)
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    raw = next((r for r in result.methods if r["method"] == "raw"), None)
    best = result.best("lda", "silhouette")
    if raw and best:
        fig.suptitle(f"layer {result.layer} ({result.space}), held-out pairs: silhouette {raw['silhouette']:.2f} -> "
                     f"{best['silhouette']:.2f} (LDA {best['n_components']})", fontsize=10)
    axes[1].legend(fontsize=7, loc="best", markerscale=1.2)
    fig.tight_layout()
    return save_figure(fig, path)


def scores_by_components(result, path) -> Path:
    """Held-out analogy accuracy, task accuracy and silhouette for each method and n_components."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    metrics = (("analogy_accuracy", "analogy accuracy"), ("task_accuracy", "task accuracy"), ("silhouette", "silhouette"))
    raw = next((r for r in result.methods if r["method"] == "raw"), None)
    for ax, (key, label) in zip(axes, metrics):
        for method, style in (("lda", "o-"), ("pc_removed", "s--")):
            recs = sorted((r for r in result.methods if r["method"] == method and r.get(key) is not None),
                          key=lambda r: r["n_components"])
            if recs:
                ax.plot([r["n_components"] for r in recs], [r[key] for r in recs], style,
                        label="LDA components kept" if method == "lda" else "PCs removed")
        if raw and raw.get(key) is not None:
            ax.axhline(raw[key], color="k", lw=1, ls=":", label="raw")
        ax.set_title(label)
        ax.set_xlabel("n_components")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"layer {result.layer} ({result.space}): scores on held-out pairs", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def crystal_examples(crystals, path, n: int = 6) -> Path:
    """The top crystals drawn in the plane of their two sides (a at the origin)."""
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
        xy = np.asarray(e["xy"], dtype=float)
        a, b, c, d = xy
        ax.plot(*np.stack([a, b]).T, "-", color="C0", lw=2)
        ax.plot(*np.stack([c, d]).T, "-", color="C0", lw=2)
        ax.plot(*np.stack([a, c]).T, ":", color="grey")
        ax.plot(*np.stack([b, d]).T, ":", color="grey")
        for p, name in zip(xy, e["ids"]):
            ax.scatter(*p, color="C3", s=20)
            ax.annotate(str(name), p, fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"cos {e['cosine']:.2f}, ratio {e['length_ratio']:.2f}", fontsize=9)
    if not ex:
        axes[0, 0].text(0.5, 0.5, "no crystals found", ha="center", va="center")
    fig.suptitle(f"layer {crystals.layer}: top crystals (b - a ≈ d - c), feature ids", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_all(atoms, crystals, out) -> dict:
    """Every atom figure for one layer into ``out``; returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"differences": differences_2d(atoms, out / "atoms_differences.png"),
             "scores": scores_by_components(atoms, out / "atoms_scores.png")}
    if crystals is not None:
        paths["crystals"] = crystal_examples(crystals, out / "atoms_crystals.png")
    return paths


__all__ = ["differences_2d", "scores_by_components", "crystal_examples", "plot_all"]
