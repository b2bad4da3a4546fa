"""Findings report: every claim of the paper (and of the layer-wise methods) judged on saved results.

``featuregeo report RESULTS_DIR`` (through :func:`featuregeo.pipeline.report.run`) writes one
self-contained ``report.html``.  The package reads Results (``XResult.load``) and draws figures with
:mod:`featuregeo.pl`; it computes no science beyond the verdict rules of :mod:`featuregeo.report.rules`.

>>> from featuregeo.report import build, render                      # doctest: +SKIP
>>> report, figures, failed = build(["out/demo"])
>>> report.claim("galaxy.power_law").verdict
>>> html = render(report, figures, failed)
"""

from featuregeo.report.build import CLAIMS, build, judge
from featuregeo.report.html import render
from featuregeo.report.inputs import ANALYSES, ResultSet, load_results
from featuregeo.report.records import (INCONCLUSIVE, NO_RESULTS, NOT_SUPPORTED, SUPPORTED, VERDICTS, ClaimRecord,
                                       ReportResult, Spread)
from featuregeo.report.spec import ClaimSpec

__all__ = ["CLAIMS", "build", "judge", "render", "ANALYSES", "ResultSet", "load_results", "ClaimRecord",
           "ReportResult", "Spread", "ClaimSpec", "VERDICTS", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE",
           "NO_RESULTS"]
