"""The records of a findings report: one :class:`ClaimRecord` per claim, gathered in a :class:`ReportResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featuregeo.core.results import Result

#: the verdicts a claim can get (see :mod:`featuregeo.report.rules` for the criteria)
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NO_RESULTS = "supported", "not supported", "inconclusive", "no results"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NO_RESULTS)


@dataclass
class Spread(Result):
    """One claim's headline number across several result directories (or rows of a robustness table).

    Attributes
    ----------
    labels : list of str
        Where each value came from (a result directory, or the ``source`` column of a robustness table).
    values : list of float or None
        The headline number of each (None where that directory has no result).
    verdicts : list of str
        The verdict of each ("" for robustness-table rows, which carry numbers only).
    low, high : list of float or None
        The interval of each value, when known.
    """

    kind = "spread"
    labels: list[str] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    low: list[float | None] = field(default_factory=list)
    high: list[float | None] = field(default_factory=list)

    def finite(self) -> list[float]:
        return [float(v) for v in self.values if v is not None and v == v]


@dataclass
class ClaimRecord(Result):
    """One claim: the paper's number, ours with its interval, the null, the verdict and how to reproduce it.

    Attributes
    ----------
    id : str
        Stable identifier (``galaxy.power_law``); robustness tables refer to claims by it.
    scale, title, reference : str
        Analysis (``galaxy``, ``lobes``, ...), the claim in words, and who made it.
    paper : str
        The paper's figure or numbers, in words (the numbers read from ``paper_reference.json``).
    paper_value : float or None
    ours : str
        Our result in words.
    value, low, high : float or None
        Our headline number and its interval (``value_label`` says what it is).
    value_label : str
    null : str
        The null the number is compared with, in words.
    null_value : float or None
    verdict : str
        One of :data:`VERDICTS`.
    sentence : str
        The verdict in one sentence, computed from the numbers.
    rule : str
        The criterion that turns the numbers into the verdict.
    columns : list of str
        Column names of ``rows``.
    rows : list of list
        Per-unit details (one row per layer, transition, ...): numbers or strings.
    figure : str
        Key of the embedded figure ("" for none).
    command : str
        The command(s) that reproduce the result, one per line.
    result_dir : str
        The directory the numbers were read from.
    spread : Spread or None
        The headline number across the other result directories / a robustness table.
    """

    kind = "claim"
    id: str = ""
    scale: str = ""
    title: str = ""
    reference: str = ""
    paper: str = ""
    paper_value: float | None = None
    ours: str = ""
    value: float | None = None
    low: float | None = None
    high: float | None = None
    value_label: str = ""
    null: str = ""
    null_value: float | None = None
    verdict: str = NO_RESULTS
    sentence: str = ""
    rule: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    figure: str = ""
    command: str = ""
    result_dir: str = ""
    spread: Spread | None = None


@dataclass
class ReportResult(Result):
    """A findings report (``report.json`` + ``report.csv`` beside ``report.html``).

    Attributes
    ----------
    dirs : list of str
        The result directories read (the first is the primary one).
    found : dict str -> str
        Analysis -> the directory its result was read from (primary directory).
    unreadable : dict str -> str
        Analysis -> why its result could not be read.
    claims : list of ClaimRecord
    html : str
        Path of the report written ("" when not written).
    """

    kind = "report"
    dirs: list[str] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    claims: list[ClaimRecord] = field(default_factory=list)
    html: str = ""

    def claim(self, claim_id: str) -> ClaimRecord:
        """The record of one claim (KeyError naming the known ids otherwise)."""
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(f"{claim_id!r}; known claims: {[c.id for c in self.claims]}")

    def rows(self) -> list[dict[str, Any]]:
        """One row per claim: id, verdict, our number with its interval, the paper's, the null."""
        return [{"id": c.id, "scale": c.scale, "verdict": c.verdict, "value": c.value, "low": c.low, "high": c.high,
                 "value_label": c.value_label, "paper_value": c.paper_value, "null_value": c.null_value,
                 "result_dir": c.result_dir} for c in self.claims]


__all__ = ["Spread", "ClaimRecord", "ReportResult", "VERDICTS", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE",
           "NO_RESULTS"]
