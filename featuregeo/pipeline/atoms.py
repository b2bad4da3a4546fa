"""Atoms pipeline: function vectors, LDA on held-out pairs and crystals, per layer."""

from __future__ import annotations

from pathlib import Path

from featuregeo.pipeline.common import log


def run(model, layers, out, *, sae: str = "default", fast: bool = False, seed: int = 0,
                      tasks=None, pair_files=(), template: str = " {word}", sae_space: bool = False,
                      max_pairs: int | None = None, crystal_mode: str = "ann", crystal_kw: dict | None = None,
                      plots: bool = True) -> dict:
    """Atom scale for ``layers`` of ``model`` (name or LoadedModel): pairs, LDA on held-out pairs, crystals.

    ``fast`` caps every task at 24 pairs and 100 analogy quadruples per task (the demo).  Writes
    ``out/atoms.json`` + ``out/crystals.csv`` (one layer) or ``out/layer_L/...`` + a combined
    ``out/crystals.csv`` (several), and figures.  Returns ``{layer: {...}}`` as :func:`featuregeo.tl.atoms.run_atoms`.
    """
    from featuregeo.pl import atoms as plot_atoms
    from featuregeo.tl.atoms import run_atoms

    out = Path(out)
    res = run_atoms(model, layers, out, sae=sae, tasks=tasks, pair_files=pair_files, template=template,
                    max_pairs=24 if fast and max_pairs is None else max_pairs, sae_space=sae_space,
                    max_quadruples=100 if fast else 500, crystal_kw={"mode": crystal_mode, **(crystal_kw or {})},
                    seed=seed, progress=log)
    if plots:
        for L, r in res.items():
            r["figures"] = plot_atoms.plot_all(r["atoms"], r["crystals"], r["dir"])
    return res


