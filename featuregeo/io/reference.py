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


__all__ = ["paper_reference", "paper_galaxy_slopes"]
