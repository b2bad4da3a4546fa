"""Assemble a findings report: load the results, judge every claim, gather spreads, draw the figures."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

from featuregeo.core.errors import InputError
from featuregeo.report.claims_galaxy import CLAIMS as GALAXY_CLAIMS
from featuregeo.report.claims_model import CLAIMS as MODEL_CLAIMS
from featuregeo.report.claims_sae import CLAIMS as SAE_CLAIMS
from featuregeo.report.commands import command
from featuregeo.report.inputs import ANALYSES, ResultSet, load_results
from featuregeo.report.records import NO_RESULTS, ClaimRecord, ReportResult, Spread
from featuregeo.report.spec import ClaimSpec

#: every claim the report knows, in the order it prints them
CLAIMS: tuple[ClaimSpec, ...] = (*GALAXY_CLAIMS, *SAE_CLAIMS, *MODEL_CLAIMS)


def judge(spec: ClaimSpec, rs: ResultSet) -> ClaimRecord:
    """One claim judged on the results of one directory (a "no results" record when they are absent)."""
    paper, paper_value = spec.paper()
    result = rs.get(spec.analysis)
    where = rs.dir(spec.analysis)
    rec = ClaimRecord(id=spec.id, scale=spec.analysis, title=spec.title, reference=spec.reference, paper=paper,
                      paper_value=paper_value, rule=spec.rule, result_dir=str(where),
                      command=command(spec.analysis, result, where, rs.root))
    if result is None:
        why = rs.unreadable.get(spec.analysis)
        rec.sentence = (f"No results: the {spec.analysis} result could not be read ({why})." if why else
                        f"No results: no {spec.analysis} result in {rs.root}.")
        return rec
    fields = spec.evaluate(result, where)
    for k, v in fields.items():
        setattr(rec, k, v)
    if rec.verdict != NO_RESULTS and spec.figure is not None:
        rec.figure = spec.figure[0]
    return rec


def spread(claim_id: str, records: Sequence[ClaimRecord], labels: Sequence[str], robustness) -> Spread | None:
    """The headline number of one claim across directories and robustness-table rows (None when one source)."""
    rows = [r for r in robustness if r.claim == claim_id]
    if len(records) < 2 and not rows:
        return None
    s = Spread(labels=list(labels), values=[r.value for r in records], verdicts=[r.verdict for r in records],
               low=[r.low for r in records], high=[r.high for r in records])
    for r in rows:
        s.labels.append(r.source)
        s.values.append(r.value)
        s.verdicts.append("")
        s.low.append(r.low)
        s.high.append(r.high)
    return s


def draw_figures(specs: Sequence[ClaimSpec], records: Sequence[ClaimRecord], rs: ResultSet,
                 progress: Callable[[str], None] | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """PNG bytes of every figure the claims refer to (each key drawn once); failures by key."""
    figures: dict[str, bytes] = {}
    failed: dict[str, str] = {}
    by_key = {s.figure[0]: (s.analysis, s.figure[1]) for s in specs if s.figure is not None}
    wanted = [k for k in dict.fromkeys(r.figure for r in records if r.figure)]
    with tempfile.TemporaryDirectory(prefix="featuregeo-report-") as tmp:
        for key in wanted:
            analysis, draw = by_key[key]
            try:
                path = draw(rs.get(analysis), Path(tmp) / f"{key}.png")
                figures[key] = Path(path).read_bytes()
            except Exception as e:  # a figure that cannot be drawn must not lose the report
                failed[key] = f"{type(e).__name__}: {e}"
                if progress:
                    progress(f"report: figure {key} could not be drawn ({failed[key]})")
    return figures, failed


def build(dirs: Sequence[str | Path], *, figures: bool = True, progress: Callable[[str], None] | None = None
          ) -> tuple[ReportResult, dict[str, bytes], dict[str, str]]:
    """Judge every claim on the results in ``dirs`` (the first is primary; the others give spreads).

    Returns the report, the figures (key -> PNG bytes) and the figures that failed (key -> reason).
    An InputError when a directory is missing or the primary one holds no result at all.
    """
    if not dirs:
        raise InputError("RESULTS_DIR: expected at least one results directory")
    sets = [load_results(d) for d in dirs]
    primary = sets[0]
    if not primary.results and not primary.unreadable:
        raise InputError(f"RESULTS_DIR {primary.root}: no featuregeo results found; expected a directory with "
                         f"{', '.join(f'{a}/' for a in ANALYSES)} (or one of them) written by featuregeo")
    labels = [str(s.root) for s in sets]
    robustness = [row for s in sets for row in s.robustness]
    # a further directory holding only a robustness table adds its rows, not a "no results" directory of its own
    judged = [0] + [i for i, s in enumerate(sets) if i and (s.results or s.unreadable or not s.robustness)]
    claims = []
    for spec in CLAIMS:
        recs = [judge(spec, s) for s in sets]
        rec = recs[0]
        rec.spread = spread(spec.id, [recs[i] for i in judged], [labels[i] for i in judged], robustness)
        claims.append(rec)
    report = ReportResult(dirs=labels, found={k: str(v) for k, v in primary.dirs.items() if k in primary.results},
                          unreadable=dict(primary.unreadable), claims=claims)
    if progress:
        n = sum(c.verdict != NO_RESULTS for c in claims)
        progress(f"report: {n} of {len(claims)} claims judged from {', '.join(sorted(report.found)) or 'nothing'}")
    figs, failed = draw_figures(CLAIMS, claims, primary, progress) if figures else ({}, {})
    return report, figs, failed


__all__ = ["CLAIMS", "build", "judge", "spread", "draw_figures"]
