"""Figures of the interaction basis, drawn from an :class:`~featuregeo.tl.interaction.InteractionResult` only.

Standard file names (:data:`FIGURES`, written by :func:`plot_all`): ``interaction_spectra.png``
(eigenvalue spectra of G and M per node layer), ``interaction_ablation.png`` (held-out loss keeping
the top n directions, interaction basis vs PCA), ``interaction_graph.png`` (the edge graph of the
top directions), ``interaction_edges.png`` (edge matrices, interaction vs PCA) and
``interaction_convergence.png`` (edges against integration steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.interaction import InteractionResult

FIGURES = {"spectra": "interaction_spectra.png", "ablation": "interaction_ablation.png",
           "graph": "interaction_graph.png", "edges": "interaction_edges.png",
           "convergence": "interaction_convergence.png"}

__all__ = ["FIGURES", "spectra", "ablation", "graph", "edge_matrices", "convergence", "plot_all"]


def spectra(result: InteractionResult, path: str | Path) -> Path:
    """Eigenvalues of the Gram matrix G and of M (normalised to their largest) per node layer."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for r in result.layers:
        g = r.basis.gram_eigenvalues
        axes[0].semilogy(np.arange(1, len(g) + 1), np.maximum(g / g[0], 1e-20), label=f"layer {r.layer}")
        m = r.basis.m_eigenvalues if r.basis.method == "interaction" else np.zeros(0)
        if len(m):
            axes[1].semilogy(np.arange(1, len(m) + 1), np.maximum(m / m[0], 1e-20), label=f"layer {r.layer}")
    axes[0].set(title="Gram matrix G = E[f~ f~^T] (= PCA)", xlabel="rank", ylabel="eigenvalue / largest")
    axes[1].set(title="M = D^1/2 U^T E[J^T J] U D^1/2 (interaction basis)", xlabel="rank")
    for ax in axes:
        ax.axhline(result.params.gram_threshold, color="0.5", ls=":", lw=1)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def ablation(result: InteractionResult, path: str | Path) -> Path:
    """Held-out loss keeping the top n directions at each node layer: interaction basis vs PCA."""
    plt = pyplot()
    curves = [r.ablation for r in result.layers if r.ablation is not None]
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4 * max(1, len(curves)), 3.6), squeeze=False,
                             layout="constrained")
    for ax, c in zip(axes[0], curves):
        ax.plot(c.n, c.loss_interaction, "o-", label="interaction basis")
        ax.plot(c.n, c.loss_pca, "s--", label="PCA")
        ax.axhline(c.baseline, color="0.4", ls=":", label="unmodified")
        ax.set(xscale="log", title=f"layer {c.layer}", xlabel="directions kept (top n)",
               ylabel="held-out loss (nats/token)")
        ax.legend(fontsize=8)
    if not curves:
        axes[0][0].text(0.5, 0.5, "no ablation curve (loss_rows = 0)", ha="center")
    return save_figure(fig, path)


def graph(result: InteractionResult, path: str | Path, *, top: int = 12, keep: float = 0.9) -> Path:
    """The interaction graph: the top ``top`` directions of each node layer as nodes; the largest
    edges (holding a ``keep`` fraction of each layer pair's shown mass) as lines, width ~ edge."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.2 * max(2, len(result.layers)), 6), layout="constrained")
    for x, es in enumerate(result.edges):
        E = np.asarray(es.edges)[:top, :top]
        if E.size == 0 or E.max() <= 0:
            continue
        order = np.argsort(E.ravel())[::-1]
        cum = np.cumsum(E.ravel()[order]) / E.sum()
        for idx in order[: int(np.searchsorted(cum, keep)) + 1]:
            i, j = divmod(int(idx), E.shape[1])
            w = E[i, j] / E.max()
            ax.plot([x, x + 1], [-j, -i], color="tab:blue", lw=0.3 + 4 * w, alpha=0.25 + 0.75 * w)
    for x, r in enumerate(result.layers):
        n = min(top, r.basis.n_kept)
        imp = r.basis.importance[:n]
        ax.scatter(np.full(n, x), -np.arange(n), s=20 + 200 * imp / imp.max(), color="k", zorder=3)
    ax.set_xticks(range(len(result.layers)), [f"layer {r.layer}\n({r.basis.method})" for r in result.layers])
    ax.set_yticks(-np.arange(top), [str(i) for i in range(top)], fontsize=7)
    ax.set_ylabel("direction (rank by importance)")
    ax.set_title(f"interaction graph: top {top} directions, edges holding {keep:.0%} of the mass")
    return save_figure(fig, path)


def edge_matrices(result: InteractionResult, path: str | Path) -> Path:
    """Edge matrices between adjacent node layers, interaction basis (top row) vs PCA (bottom row)."""
    plt = pyplot()
    n = max(1, len(result.edges))
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.6), squeeze=False, layout="constrained")
    for row, sets in enumerate((result.edges, result.pca_edges)):
        for ax, es in zip(axes[row], sets):
            E = np.asarray(es.edges)
            im = ax.imshow(np.log10(np.maximum(E / max(E.max(), 1e-300), 1e-8)), cmap="magma", vmin=-6, vmax=0)
            ax.set(title=f"{es.method} {es.layer_in}->{es.layer_out}: top 1% = {es.top1_mass:.2f}",
                   xlabel=f"direction at {es.layer_in}", ylabel=f"direction at {es.layer_out}")
            ax.title.set_fontsize(9)
        if sets:
            fig.colorbar(im, ax=axes[row].tolist(), fraction=0.02, label="log10 edge / max")
    return save_figure(fig, path)


def convergence(result: InteractionResult, path: str | Path) -> Path:
    """Relative change of the edges against the number of quadrature nodes (the run's rule and baseline)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    how = ""
    for es in result.edges:
        c = es.convergence
        if c is None or len(c.steps) < 2:
            continue
        how = f" ({c.rule} nodes, {c.baseline} baseline)"
        ax.plot(c.steps[:-1], np.maximum(c.rel_change[:-1], 1e-16), "o-", label=f"{es.layer_in}->{es.layer_out}")
    ax.set(xscale="log", yscale="log", xlabel="quadrature nodes",
           ylabel="||E(n) - E(max)|| / ||E(max)||", title="edge convergence" + how)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_all(result: InteractionResult, out: str | Path) -> dict[str, Path]:
    """Draw every figure of :data:`FIGURES` into ``out``; returns key -> path."""
    out = Path(out)
    fns = {"spectra": spectra, "ablation": ablation, "graph": graph, "edges": edge_matrices,
           "convergence": convergence}
    return {k: fns[k](result, out / name) for k, name in FIGURES.items()}
