"""Reference numbers reported by the paper, stored as data (``data/paper_reference.json``)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def paper_reference() -> dict:
    """The paper's reported numbers (galaxy slopes per layer, entropy, lobe statistics)."""
    return json.loads(resources.files("featuregeo").joinpath("data/paper_reference.json").read_text())


