"""One self-contained ``report.html``: inline CSS, figures as base64 PNG, no scripts, no external fetches.

Every string that comes from a result, a path or a parameter goes through :func:`esc` (``html.escape``
with quotes), so a hostile label (``<script>``, ``"onerror=``) is shown as text.  The whole report is
also embedded as JSON in a hidden ``<pre id="featuregeo-report-json">`` (escaped the same way) for
tools that want the exact numbers.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any, Mapping

from featuregeo.core.util import to_jsonable
from featuregeo.report import rules
from featuregeo.report.records import NO_RESULTS, VERDICTS, ClaimRecord, ReportResult, Spread

SCALES = {"galaxy": "Galaxy scale: the shape of the feature cloud", "lobes": "Brain scale: functional lobes",
          "atoms": "Atom scale: function vectors and crystals", "layers": "Layers: similarity and pruning",
          "lens": "Lenses", "updates": "Layer updates", "interaction": "Interaction basis"}

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#1d1d1f}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f5f5f7}table.facts th{width:7em}pre{white-space:pre-wrap;margin:0;
font-size:13px}.verdict{border-radius:4px;padding:1px 8px;font-size:13px;font-weight:600;white-space:nowrap}
.v-supported{background:#d8f3dc;color:#1b4332}.v-not-supported{background:#ffd6d6;color:#7f1d1d}
.v-inconclusive{background:#fff3c4;color:#6b4f00}.v-no-results{background:#e5e5e5;color:#444}
.claim{border:1px solid #e3e3e3;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}.sentence{font-weight:500}
img{max-width:100%;border:1px solid #eee}.muted{color:#666;font-size:13px}
"""


def esc(x: Any) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape("" if x is None else str(x), quote=True)


def verdict_badge(v: str) -> str:
    cls = "v-" + (v if v in VERDICTS else NO_RESULTS).replace(" ", "-")
    return f'<span class="verdict {cls}">{esc(v)}</span>'


def table(columns, rows, cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(rules.num(v) if isinstance(v, float) else v)}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f'<table{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}><tr>{head}</tr>{body}</table>'


def headline(c: ClaimRecord) -> str:
    """Our number with its interval, as printed."""
    if c.value is None:
        return "-"
    ci = rules.interval(c.low, c.high)
    return f"{rules.num(c.value)}{' ' + ci if ci else ''}"


def spread_html(s: Spread) -> str:
    vals = s.finite()
    judged = [v for v in s.verdicts if v]
    summary = (f"{len(vals)} values: {rules.num(min(vals))} .. {rules.num(max(vals))}, median "
               f"{rules.num(rules.median(vals))}" if vals else "no values")
    if judged:
        summary += "; verdicts: " + ", ".join(f"{v} {judged.count(v)}" for v in VERDICTS if judged.count(v))
    rows = [[label, rules.num(v), rules.interval(lo, hi), verdict or "(robustness table)"]
            for label, v, lo, hi, verdict in zip(s.labels, s.values, s.low, s.high, s.verdicts)]
    return (f"<p><b>Spread across result sets</b>: {esc(summary)}</p>" +
            table(["result set", "value", "interval", "verdict"], rows))


def claim_html(c: ClaimRecord, figures: Mapping[str, bytes], failed: Mapping[str, str]) -> str:
    parts = [f'<section class="claim" id="claim-{esc(c.id)}"><h3>{esc(c.title)} {verdict_badge(c.verdict)}</h3>',
             f'<p class="sentence">{esc(c.sentence)}</p>', '<table class="facts">',
             f"<tr><th>claim</th><td>{esc(c.id)} — {esc(c.reference)}</td></tr>",
             f"<tr><th>paper</th><td>{esc(c.paper)}</td></tr>"]
    if c.verdict != NO_RESULTS or c.ours:
        parts.append(f"<tr><th>ours</th><td>{esc(c.ours)}<br><b>{esc(c.value_label)}</b>: {esc(headline(c))}</td></tr>")
        parts.append(f"<tr><th>null</th><td>{esc(c.null)}"
                     f"{': ' + esc(rules.num(c.null_value)) if c.null_value is not None else ''}</td></tr>")
    parts += [f"<tr><th>rule</th><td>{esc(c.rule)}</td></tr>",
              f"<tr><th>reproduce</th><td><pre><code>{esc(c.command)}</code></pre></td></tr>",
              f'<tr><th>read from</th><td class="muted">{esc(c.result_dir)}</td></tr></table>']
    if c.spread is not None:
        parts.append(spread_html(c.spread))
    if c.rows:
        parts.append(f"<details><summary>Numbers per unit ({len(c.rows)})</summary>{table(c.columns, c.rows)}</details>")
    if c.figure in figures:
        data = base64.b64encode(figures[c.figure]).decode("ascii")
        parts.append(f'<figure><img alt="{esc(c.figure)}" src="data:image/png;base64,{data}"></figure>')
    elif c.figure in failed:
        parts.append(f'<p class="muted">Figure {esc(c.figure)} could not be drawn: {esc(failed[c.figure])}</p>')
    parts.append("</section>")
    return "".join(parts)


def rules_html() -> str:
    items = [("MAJORITY", "fraction of units that must pass for supported"),
             ("MINORITY", "at most this fraction passing gives not supported"),
             ("ALPHA", "family-wise level, Bonferroni over layers"), ("R2_MIN", "a power-law fit's minimum R2"),
             ("SLOPE_TOL", "tolerance when comparing our slope with the paper's"),
             ("PRUNE_TOL", "nats/token below which loss differences are ties"),
             ("ALIGN_COS", "cos(D, T) of an almost perfect alignment"),
             ("SPEARMAN_PAPER", "the paper's strong correlation"),
             ("SE_FACTOR", "standard errors a difference of proportions must exceed"),
             ("SIGMA_MIN", "null standard deviations a statistic must exceed its null by")]
    rows = [[name, getattr(rules, name), what] for name, what in items]
    return ("<h2 id=\"rules\">How verdicts are decided</h2><p>Each claim is tested per unit (layer, transition, "
            "case); " + esc(rules.COUNT_RULE) + ". A claim whose result is missing says <i>no results</i>. "
            "The thresholds:</p>" + table(["constant", "value", "meaning"], rows))


def render(report: ReportResult, figures: Mapping[str, bytes] | None = None,
           failed: Mapping[str, str] | None = None, title: str = "featuregeo findings report") -> str:
    """The report as one HTML page."""
    figures, failed = figures or {}, failed or {}
    claims = report.claims
    judged = [c for c in claims if c.verdict != NO_RESULTS]
    missing = [c for c in claims if c.verdict == NO_RESULTS]
    out = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
           "<p class=\"muted\">Results read from: " + ", ".join(f"<code>{esc(d)}</code>" for d in report.dirs) +
           ("" if len(report.dirs) < 2 else " (the first is primary; the others give the spreads)") + "</p>"]
    if report.unreadable:
        out.append("<p>Unreadable results: " + "; ".join(f"{esc(k)}: {esc(v)}" for k, v in report.unreadable.items())
                   + "</p>")
    counts = ", ".join(f"{sum(c.verdict == v for c in claims)} {v}" for v in VERDICTS)
    out.append(f"<h2>Summary</h2><p>{len(claims)} claims: {esc(counts)}.</p>")
    rows = "".join(f'<tr><td><a href="#claim-{esc(c.id)}">{esc(c.title)}</a></td><td>{esc(c.scale)}</td>'
                   f"<td>{verdict_badge(c.verdict)}</td><td>{esc(headline(c))}<br><span class=\"muted\">{esc(c.value_label)}"
                   "</span></td>"
                   f"<td>{esc(rules.num(c.paper_value)) if c.paper_value is not None else '-'}</td></tr>"
                   for c in judged)
    if missing:
        out.append(f'<p>{len(missing)} claims have no results here: <a href="#no-results">listed below</a> with the '
                   "commands that produce them.</p>")
    out.append("<table><tr><th>claim</th><th>analysis</th><th>verdict</th><th>ours</th><th>paper</th></tr>"
               f"{rows}</table>")
    for scale, heading in SCALES.items():
        mine = [c for c in judged if c.scale == scale]
        if mine:
            out.append(f"<h2 id=\"{esc(scale)}\">{esc(heading)}</h2>")
            out += [claim_html(c, figures, failed) for c in mine]
    if missing:
        out.append("<h2 id=\"no-results\">Claims without results</h2><ul>" + "".join(
            f"<li><b>{esc(c.title)}</b> ({esc(c.id)}): {esc(c.sentence)} Run: <code>{esc(c.command)}</code></li>"
            for c in missing) + "</ul>")
    out.append(rules_html())
    doc = json.dumps(to_jsonable(report.to_dict()), ensure_ascii=False, allow_nan=False)
    out.append(f'<pre id="featuregeo-report-json" hidden>{esc(doc)}</pre></body></html>')
    return "\n".join(out)


__all__ = ["render", "esc", "CSS", "SCALES"]
