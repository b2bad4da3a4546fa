"""Galaxy figures: spectra, slopes per layer, clustering entropy (read a GalaxyResult only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.galaxy import GalaxyResult


def galaxy_spectra(result: GalaxyResult, path: str | Path) -> Path:
    """Log-log eigenvalue spectra, one line per layer (colour = depth), nulls dashed, fit window shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    n = max(1, len(result.layers))
    for i, rec in enumerate(result.layers):
        ev = np.asarray(rec.eigenvalues)
        ev = ev[ev > 0]
        ax.loglog(np.arange(1, ev.size + 1), ev / ev[0], color=cmap(i / max(1, n - 1)), lw=1.2,
                  label=f"layer {rec.layer}")
        if rec.activation_eigenvalues:
            aev = np.asarray(rec.activation_eigenvalues)
            aev = aev[aev > 0]
            ax.loglog(np.arange(1, aev.size + 1), aev / aev[0], color=cmap(i / max(1, n - 1)), lw=0.8, ls=":")
    nulls = [r for r in result.layers if r.null_eigenvalues]
    if nulls:
        nev = np.asarray(nulls[0].null_eigenvalues)
        nev = nev[nev > 0]
        ax.loglog(np.arange(1, nev.size + 1), nev / nev[0], color="grey", ls="--", lw=1.2,
                  label="isotropic Gaussian null")
    if result.layers:
        a, b = result.layers[0].fit_ranks
        ax.axvspan(a, b, color="orange", alpha=0.12, label=f"fit ranks {a}-{b}")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue / largest eigenvalue")
    ax.set_title("Covariance spectrum of SAE decoder directions")
    if n <= 12:
        ax.legend(fontsize=7, ncol=2)
    else:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(result.layers[0].layer, result.layers[-1].layer))
        fig.colorbar(sm, ax=ax, label="layer")
    out = save_figure(fig, Path(path))
    plt.close(fig)
    return out


def galaxy_slopes(result: GalaxyResult, path: str | Path, reference: dict | None = None) -> Path:
    """Power-law slope vs layer with 95% intervals, the null slope, and the paper's values if given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    layers = [r.layer for r in result.layers]
    slopes = np.array([r.slope for r in result.layers])
    lo = np.array([r.slope_ci[0] for r in result.layers])
    hi = np.array([r.slope_ci[1] for r in result.layers])
    ax.errorbar(layers, slopes, yerr=[slopes - lo, hi - slopes], fmt="o-", capsize=3, label="SAE decoder rows")
    null = [(r.layer, r.null_slope) for r in result.layers if r.null_slope is not None]
    if null:
        ax.plot(*zip(*null), "s--", color="grey", label="isotropic Gaussian null (same shape)")
    act = [(r.layer, r.activation_slope) for r in result.layers if r.activation_slope is not None]
    if act:
        ax.plot(*zip(*act), "^:", color="tab:green", label="raw residual activations")
    if reference:
        ref = sorted((int(k), v) for k, v in reference.items())
        ax.plot(*zip(*ref), "x", color="tab:red", ms=8, label="paper (gemma-2-2b, 65k)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("power-law slope")
    ax.set_title("Galaxy: spectrum slope by layer (95% CI)")
    ax.legend(fontsize=8)
    out = save_figure(fig, Path(path))
    plt.close(fig)
    return out


def galaxy_entropy(result: GalaxyResult, path: str | Path) -> Path:
    """Clustering entropy (Gaussian - kNN) vs layer with intervals, and the matched-Gaussian null."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    recs = [r for r in result.layers if r.entropy]
    if recs:
        layers = [r.layer for r in recs]
        d = np.array([r.entropy["difference"] for r in recs])
        ci = np.array([r.entropy["ci"] if r.entropy["ci"] and r.entropy["ci"][0] is not None else [v, v]
                       for r, v in zip(recs, d)], dtype=float)
        ax.errorbar(layers, d, yerr=[d - ci[:, 0], ci[:, 1] - d], fmt="o-", capsize=3,
                    label="SAE decoder rows")
        nd = np.array([np.nan if r.entropy["null_difference"] is None else r.entropy["null_difference"]
                       for r in recs], dtype=float)
        if np.isfinite(nd).any():
            nci = np.array([r.entropy["null_ci"] if r.entropy["null_ci"] and r.entropy["null_ci"][0] is not None
                            else [v, v] for r, v in zip(recs, nd)], dtype=float)
            ax.errorbar(layers, nd, yerr=[nd - nci[:, 0], nci[:, 1] - nd], fmt="s--", color="grey", capsize=3,
                        label="Gaussian with the same spectrum (estimator bias)")
        p = recs[0].entropy["params"]
        ax.set_title(f"Clustering entropy: Gaussian - k-NN (k={p['k']}, {p['subsample']} points, "
                     f"{p['pca_dim']} dims, no replacement)", fontsize=9)
    ax.set_xlabel("layer")
    ax.set_ylabel("entropy difference (nats)")
    ax.legend(fontsize=8)
    out = save_figure(fig, Path(path))
    plt.close(fig)
    return out
