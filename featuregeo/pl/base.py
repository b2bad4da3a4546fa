"""Shared figure plumbing: the Agg pyplot and an atomic save.

Plot modules in :mod:`featuregeo.pl` draw from Result objects only (they never compute science);
matplotlib is imported inside each function with the non-interactive Agg backend.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path



def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically (temporary file, then rename) and close it. Shared by every plot module."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        tmp.replace(path)
    finally:
        pyplot().close(fig)
    return path
