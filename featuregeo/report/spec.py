"""What a claim is before it meets the numbers: :class:`ClaimSpec`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper and how to judge it.

    Attributes
    ----------
    id : str
        Stable identifier (``galaxy.power_law``).
    analysis : str
        The result it reads (``galaxy``, ``lobes``, ``atoms``, ``layers``, ``lens``, ``updates``, ``interaction``).
    title : str
        The claim in words.
    reference : str
        Who made it.
    rule : str
        The criterion, in words (the thresholds of :mod:`featuregeo.report.rules`).
    paper : callable () -> (str, float or None)
        The paper's figure/number in words and as a number (read from the stored reference data).
    evaluate : callable (result, directory) -> dict
        :class:`~featuregeo.report.records.ClaimRecord` fields computed from the loaded result: ``ours``,
        ``value``, ``low``, ``high``, ``value_label``, ``null``, ``null_value``, ``verdict``, ``sentence``,
        ``columns``, ``rows``.
    figure : (str, callable (result, path) -> Path) or None
        Key and drawing function of the figure (a figure shared by several claims is drawn once).
    """

    id: str
    analysis: str
    title: str
    reference: str
    rule: str
    paper: Callable[[], tuple[str, float | None]]
    evaluate: Callable[[Any, Path], dict]
    figure: tuple[str, Callable[[Any, Path], Path]] | None = None


GEOMETRY_PAPER = "Li et al. 2025, The Geometry of Concepts (arXiv 2410.19750)"

__all__ = ["ClaimSpec", "GEOMETRY_PAPER"]
