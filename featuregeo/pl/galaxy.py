"""Galaxy figures: spectra, slopes per layer, clustering entropy (they read a GalaxyResult only).

:func:`plot_all` writes the standard files ``galaxy_spectra.png``, ``galaxy_slopes.png`` and (when the
result has entropies) ``galaxy_entropy.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featuregeo.pl.base import pyplot, save_figure
from featuregeo.tl.galaxy import GalaxyResult

#: figure name -> standard file name written by :func:`plot_all`
FIGURES = {"spectra": "galaxy_spectra.png", "slopes": "galaxy_slopes.png", "entropy": "galaxy_entropy.png"}


def _x(layer: int | None) -> int:
    return 0 if layer is None else layer


def _positive(ev: np.ndarray) -> np.ndarray:
    ev = np.asarray(ev, dtype=float)
    return ev[ev > 0]


def galaxy_spectra(result: GalaxyResult, path: str | Path) -> Path:
    """Log-log eigenvalue spectra, one line per layer (colour = depth), nulls dashed, fit window shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    n = max(1, len(result.layers))
    for i, rec in enumerate(result.layers):
        colour = cmap(i / max(1, n - 1))
        ev = _positive(rec.eigenvalues)[:max(rec.numerical_rank, 1)]
        if ev.size:
            ax.loglog(np.arange(1, ev.size + 1), ev / ev[0], color=colour, lw=1.2, label=f"layer {rec.layer}")
        if rec.activation_eigenvalues is not None:
            aev = _positive(rec.activation_eigenvalues)
            if aev.size:
                ax.loglog(np.arange(1, aev.size + 1), aev / aev[0], color=colour, lw=0.8, ls=":")
    nulls = [r for r in result.layers if r.null_eigenvalues is not None]
    if nulls:
        nev = _positive(nulls[0].null_eigenvalues)
        ax.loglog(np.arange(1, nev.size + 1), nev / nev[0], color="grey", ls="--", lw=1.2,
                  label="isotropic Gaussian null")
    if result.layers:
        a, b = result.params.fit_ranks
        ax.axvspan(a, b, color="orange", alpha=0.12, label=f"fit ranks {a}-{b}")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue / largest eigenvalue")
    ax.set_title("Covariance spectrum of SAE decoder directions")
    if n <= 12:
        ax.legend(fontsize=7, ncol=2)
    else:
        lo, hi = _x(result.layers[0].layer), _x(result.layers[-1].layer)
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, max(hi, lo + 1)))
        fig.colorbar(sm, ax=ax, label="layer")
    return save_figure(fig, Path(path))


def model_layers(result: GalaxyResult, depth: int | None = None) -> tuple[int, str]:
    """Decoder blocks of the model behind ``result`` and how that was known.

    ``depth`` when given; else the model named in the records' provenance
    (:func:`featuregeo.io.reference.model_depth`); else the last analysed layer + 1 ("assumed").
    """
    from featuregeo.io.reference import model_depth

    if depth is not None:
        return int(depth), "given"
    names = {r.provenance.model_name for r in result.layers if r.provenance is not None and r.provenance.model_name}
    for name in sorted(names):
        known = model_depth(name)
        if known:
            return known, name
    return max([_x(r.layer) for r in result.layers] + [0]) + 1, "assumed: last analysed layer + 1"


def galaxy_slopes(result: GalaxyResult, path: str | Path, reference: dict[int, float] | None = None, *,
                  depth: int | None = None, reference_depth: int | None = None) -> Path:
    """Power-law slope vs layer with intervals, the null slope, activations, and the paper's values if given.

    With ``reference`` (the paper's slopes, another model) the x-axis is the **relative depth**
    ``layer / n_layers`` of each model (ours: ``depth`` or :func:`model_layers`; the paper's:
    ``reference_depth`` or :func:`featuregeo.io.reference.paper_galaxy_depth`), with our layer numbers on
    the top axis; without it, the layer.  See :func:`slopes_figure`.
    """
    return save_figure(slopes_figure(result, reference, depth=depth, reference_depth=reference_depth), Path(path))


def slopes_figure(result: GalaxyResult, reference: dict[int, float] | None = None, *, depth: int | None = None,
                  reference_depth: int | None = None):
    """The matplotlib figure of :func:`galaxy_slopes` (not saved; the caller closes it)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if reference:
        from featuregeo.io.reference import paper_galaxy_depth

        n, how = model_layers(result, depth)
        n_ref = int(reference_depth or paper_galaxy_depth())
        pos = lambda layer: _x(layer) / n  # noqa: E731
    else:
        pos = _x
    layers = [pos(r.layer) for r in result.layers]
    slopes = np.array([r.slope for r in result.layers])
    lo = np.array([r.slope_ci[0] for r in result.layers])
    hi = np.array([r.slope_ci[1] for r in result.layers])
    method = result.layers[0].slope_ci_method if result.layers else ""
    corr = [(pos(r.layer), r.slope_corrected) for r in result.layers if r.slope_corrected is not None]
    if corr:  # the interval is the exponent's, around the bias-corrected slope
        ax.plot(layers, slopes, "o-", label="SAE decoder rows: sample slope")
        cs = np.array([v for _, v in corr])
        ax.errorbar([x for x, _ in corr], cs, yerr=[cs - lo, hi - cs], fmt="D", ms=4, capsize=3, color="tab:purple",
                    label=f"bias-corrected exponent ({method.split(' +- ')[-1]} interval)")
    else:
        ax.errorbar(layers, slopes, yerr=[slopes - lo, hi - slopes], fmt="o-", capsize=3,
                    label=f"SAE decoder rows ({method} interval)")
    rng_ = [(pos(r.layer), r.window_slope_range) for r in result.layers if r.window_slope_range is not None]
    if rng_:
        ax.vlines([x for x, _ in rng_], [w[0] for _, w in rng_], [w[1] for _, w in rng_], color="tab:blue", alpha=0.3,
                  lw=6, label="range over fit windows")
    for r in result.layers:
        if np.isfinite(r.curvature):
            ax.annotate(f"{r.curvature:+.2f}", (pos(r.layer), r.slope), textcoords="offset points", xytext=(4, 6),
                        fontsize=6, color="tab:blue")
    clipped = [(pos(r.layer), r.slope) for r in result.layers if r.window_clipped]
    if clipped:
        ax.plot(*zip(*clipped), "o", mfc="none", mec="tab:red", ms=11, label="fit window clipped at numerical rank")
    null = [(pos(r.layer), r.null_slope) for r in result.layers if r.null_slope is not None]
    if null:
        ax.plot(*zip(*null), "s--", color="grey", label="isotropic Gaussian null (same shape)")
    act = [(pos(r.layer), r.activation_slope) for r in result.layers if r.activation_slope is not None]
    if act:
        ax.plot(*zip(*act), "^:", color="tab:green", label="raw residual activations")
    if reference:
        ref = sorted((int(k) / n_ref, v) for k, v in reference.items())
        ax.plot(*zip(*ref), "x", color="tab:red", ms=8, label=f"paper (gemma-2-2b, 65k; {n_ref} layers)")
        ax.set_xlabel(f"relative depth: layer / number of layers (ours: {n} layers, {how})")
        top = ax.secondary_xaxis("top", functions=(lambda x: x * n, lambda layer: layer / n))
        top.set_xlabel("our layer", fontsize=8)
    else:
        ax.set_xlabel("layer")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("power-law slope")
    ax.set_title(f"Galaxy: spectrum slope by layer ({100 * result.params.confidence:.0f}% CI; labels: curvature, "
                 "the log-log quadratic term)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def galaxy_entropy(result: GalaxyResult, path: str | Path) -> Path:
    """Clustering entropy (Gaussian - kNN) vs layer with intervals, and the matched-Gaussian null."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    recs = [r for r in result.layers if r.entropy is not None]
    if recs:
        layers = [_x(r.layer) for r in recs]
        d = np.array([r.entropy.difference for r in recs])
        ci = np.array([r.entropy.ci or (v, v) for r, v in zip(recs, d)], dtype=float)
        ax.errorbar(layers, d, yerr=[d - ci[:, 0], ci[:, 1] - d], fmt="o-", capsize=3, label="SAE decoder rows")
        nulls = [(x, r.entropy) for x, r in zip(layers, recs) if r.entropy.null_difference is not None]
        if nulls:
            nx = [x for x, _ in nulls]
            nd = np.array([e.null_difference for _, e in nulls])
            nci = np.array([e.null_ci or (v, v) for (_, e), v in zip(nulls, nd)], dtype=float)
            ax.errorbar(nx, nd, yerr=[nd - nci[:, 0], nci[:, 1] - nd], fmt="s--", color="grey", capsize=3,
                        label="Gaussian with the same spectrum (estimator bias)")
            styles = {"radial": ("v:", "tab:orange", "same spectrum, the cloud's own radii (unclustered)"),
                      "marginals": ("d:", "tab:purple", "own PC marginals, dependence destroyed (unclustered)")}
            for name, (fmt, colour, label) in styles.items():
                pts = [(x, u.difference) for x, e in nulls for u in e.nulls if u.name == name]
                if pts:
                    ax.plot(*zip(*pts), fmt, color=colour, label=label)
        e0 = recs[0].entropy
        ax.set_title(f"Clustering entropy: Gaussian - k-NN (k={e0.k}, {e0.subsample} points, "
                     f"{e0.pca_dim} dims, no replacement)", fontsize=9)
        ax.legend(fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("entropy difference (nats); clustering = excess over the highest null")
    return save_figure(fig, Path(path))


def plot_all(result: GalaxyResult, out_dir: str | Path, reference: dict[int, float] | None = None) -> dict[str, Path]:
    """Draw every galaxy figure into ``out_dir`` under the names in :data:`FIGURES`; returns name -> path."""
    out = Path(out_dir)
    paths = {"spectra": galaxy_spectra(result, out / FIGURES["spectra"]),
             "slopes": galaxy_slopes(result, out / FIGURES["slopes"], reference=reference)}
    if any(r.entropy is not None for r in result.layers):
        paths["entropy"] = galaxy_entropy(result, out / FIGURES["entropy"])
    return paths


__all__ = ["galaxy_spectra", "galaxy_slopes", "galaxy_entropy", "plot_all", "model_layers", "slopes_figure", "FIGURES"]
