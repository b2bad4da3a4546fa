"""Galaxy pipeline: open a source, run the galaxy analysis per layer (resumable), save, plot."""

from __future__ import annotations

from pathlib import Path

from featuregeo.pipeline.common import log


def activation_provider_for(path: str | None):
    if not path:
        return None
    from featuregeo.io.activations import activation_provider

    return activation_provider(path)



def run(source: str, layers, out: Path, params, activations: str | None = None,
                       reference: bool = True) -> dict:
    """Galaxy analysis of a source; writes tables and figures to ``out``.  Returns the written paths."""
    from featuregeo.pl import galaxy as plot
    from featuregeo.tl.galaxy import run_galaxy
    from featuregeo.io import open_suite
    from featuregeo.io.reference import paper_reference

    suite = open_suite(source, layers)
    log(f"galaxy: {suite.name}, layers {suite.layers} -> {out}")
    result = run_galaxy(suite, out, params, activations=activation_provider_for(activations), progress=log)
    paths = result.write(out)
    ref = paper_reference()["galaxy"]["slopes"] if reference else None
    paths["fig_spectra"] = plot.galaxy_spectra(result, out / "galaxy_spectra.png")
    paths["fig_slopes"] = plot.galaxy_slopes(result, out / "galaxy_slopes.png", reference=ref)
    if params.entropy:
        paths["fig_entropy"] = plot.galaxy_entropy(result, out / "galaxy_entropy.png")
    return {"result": result, "paths": paths}


