"""Shared pieces of the pipeline: logging to stderr and output directories."""

from __future__ import annotations

import sys
from pathlib import Path

from featuregeo.core.errors import InputError
from featuregeo.core.util import check_output_path


def log(msg: str) -> None:
    """One progress line on stderr (the CLI's and the demo's default ``progress``)."""
    print(msg, file=sys.stderr, flush=True)


def output_dir(out: str | Path, name: str = "--out") -> Path:
    """``out`` as a directory that can be written: created if missing; a file in the way is an error."""
    out = check_output_path(out, name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise InputError(f"{name} {out}: no permission to create this directory") from None
    return out
