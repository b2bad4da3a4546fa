"""Atlas pipeline: the static site and tables for a source."""

from __future__ import annotations

from pathlib import Path

from featuregeo.pipeline.common import log


def run(source, out, *, layers=None, lobes=None, atoms=None, galaxy=None, harvest=None, labels=(),
                      layout: str = "umap", affinity: str = "phi", seed: int = 0) -> dict:
    """Feature atlas of a source (static site + tables) in ``out``; resumes finished layers.

    Returns ``{"result": AtlasResult, "index": Path, "paths": {name: Path}}``.
    """
    from featuregeo.atlas.build import run_atlas

    out = Path(out)
    res = run_atlas(source, out, layers=layers, lobes=lobes, atoms=atoms, galaxy=galaxy, harvest=harvest,
                    labels=labels, layout=layout, affinity=affinity, seed=seed, progress=log)
    return {"result": res, "index": out / "index.html", "paths": {k: out / v for k, v in res.files.items()}}


