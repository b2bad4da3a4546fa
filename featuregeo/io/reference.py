"""Reference numbers reported by the paper, stored as data (``data/paper_reference.json``)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def paper_reference() -> dict:
    """The paper's reported numbers (galaxy slopes per layer, entropy, lobe statistics)."""
    return json.loads(resources.files("featuregeo").joinpath("data/paper_reference.json").read_text())


def paper_galaxy_slopes() -> dict[int, float]:
    """The paper's power-law slope per layer (gemma-2-2b, Gemma Scope 65k residual SAEs, ranks 11-150).

    Examples
    --------
    >>> paper_galaxy_slopes()[12]
    -0.468
    """
    return {int(k): float(v) for k, v in paper_reference()["galaxy"]["slopes"].items()}


def paper_galaxy_depth() -> int:
    """Decoder blocks of the paper's galaxy model (gemma-2-2b: 26), for relative depth ``layer / n_layers``."""
    return int(paper_reference()["galaxy"]["n_layers"])


def paper_galaxy_slope_at(relative_depth: float) -> float:
    """The paper's slope at a relative depth ``layer / n_layers``, linearly interpolated between its
    reported layers (held constant before the first and after the last one).

    Examples
    --------
    >>> paper_galaxy_slope_at(12 / 26)
    -0.468
    """
    import numpy as np

    n = paper_galaxy_depth()
    pts = sorted((k / n, v) for k, v in paper_galaxy_slopes().items())
    return float(np.interp(relative_depth, [p for p, _ in pts], [v for _, v in pts]))


@lru_cache(maxsize=1)
def _depths() -> dict[str, int]:
    doc = json.loads(resources.files("featuregeo").joinpath("data/model_depths.json").read_text())
    return {str(k).lower(): int(v) for k, v in doc["n_layers"].items()}


def model_depth(name: str | None) -> int | None:
    """Decoder blocks of a known model (``data/model_depths.json``), or None when the name is unknown.

    Examples
    --------
    >>> model_depth("gemma-3-270m"), model_depth("Gemma-2-2B"), model_depth("my-model")
    (18, 26, None)
    """
    if not name:
        return None
    return _depths().get(str(name).strip().lower())


__all__ = ["paper_reference", "paper_galaxy_slopes", "paper_galaxy_depth", "paper_galaxy_slope_at", "model_depth"]
