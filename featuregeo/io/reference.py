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


__all__ = ["paper_reference", "paper_galaxy_slopes", "paper_galaxy_depth", "model_depth"]
