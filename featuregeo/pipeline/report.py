"""Report pipeline: result directories -> judged claims -> ``report.html`` (+ ``report.json``, ``report.csv``).

>>> from featuregeo.pipeline import report                                   # doctest: +SKIP
>>> res = report.run("out/demo")                      # writes out/demo/report.html
>>> res.claim("galaxy.power_law").verdict, res.html

The demo calls it as its last stage with its output directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from featuregeo.core.errors import InputError
from featuregeo.core.util import atomic_write_text, check_output_path
from featuregeo.pipeline.common import log, output_dir
from featuregeo.report import ReportResult, build, render
from featuregeo.report.inputs import check_dir


def run(results_dir: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
        figures: bool = True, title: str = "featuregeo findings report",
        progress: Callable[[str], None] | None = log) -> ReportResult:
    """Judge every claim on the results in ``results_dir`` and write one self-contained HTML report.

    Parameters
    ----------
    results_dir : path or list of paths
        A results directory (a demo output, or any directory holding ``galaxy/``, ``lobes/``, ...); with
        several, the first is judged and the others give each claim's spread (e.g. one per SAE).
    out : path, optional
        The HTML file to write (default ``<first results_dir>/report.html``); ``report.json`` and
        ``report.csv`` are written beside it.
    figures : bool, default=True
        Draw and embed the figures.
    title : str
    progress : callable, optional

    Returns
    -------
    ReportResult
        With ``html`` set to the path written.
    """
    dirs = [results_dir] if isinstance(results_dir, (str, os.PathLike)) else list(results_dir)
    if not dirs:
        raise InputError("RESULTS_DIR: expected at least one results directory")
    for d in dirs:
        if not isinstance(d, (str, os.PathLike)) or not str(d).strip():
            raise InputError(f"RESULTS_DIR: expected a directory path. Got {d!r} instead.")
        check_dir(d)
    path = Path(out) if out is not None else Path(dirs[0]) / "report.html"
    check_output_path(path.parent, "--out")
    if path.is_dir():
        raise InputError(f"--out {path}: is a directory; expected the path of the HTML file to write")
    report, figs, failed = build([Path(d) for d in dirs], figures=figures, progress=progress)
    folder = output_dir(path.parent)
    report.html = str(path)
    atomic_write_text(path, render(report, figs, failed, title=title))
    os.chmod(path, 0o644)  # atomic writes are private; a report is meant to be shared
    report.save(folder)
    if progress:
        progress(f"report: wrote {path}")
    return report


__all__ = ["run"]
