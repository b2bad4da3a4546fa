"""How numbers become verdicts: the thresholds, one counting rule, and number formatting.

Most claims are made per unit (a layer, a transition, a pair of layers): each unit either **passes**
the claim's test (e.g. "the slope's interval lies below the null's slope") or not.  Then

* ``supported`` when at least :data:`MAJORITY` of the units pass,
* ``not supported`` when at most :data:`MINORITY` of them pass,
* ``inconclusive`` in between (and when a unit's test cannot be decided, e.g. overlapping intervals,
  it counts as not passing).

Claims about one number (the layer trend) state their own rule.  Every threshold is a module
constant so the documentation, the report's "rule" line and the code agree.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from featuregeo.report.records import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED

MAJORITY = 0.8  #: fraction of units that must pass for "supported"
MINORITY = 0.2  #: at most this fraction passing gives "not supported"
ALPHA = 0.05  #: family-wise level; per-unit p-values are compared with ALPHA / number of units (Bonferroni)
R2_MIN = 0.9  #: a power-law fit counts as a power law when R^2 >= this
SLOPE_TOL = 0.1  #: our slope "matches" the paper's when the paper's value lies within our interval widened by this
PRUNE_TOL = 0.01  #: nats/token: a loss difference smaller than this is a tie
ALIGN_COS = 0.9  #: "almost perfectly aligned": mean cos(D, T) >= this
SPEARMAN_PAPER = 0.7  #: the paper's "often > 0.7" for Spearman(|R|, KL)
SE_FACTOR = 2.0  #: a difference of two proportions counts when it exceeds this many standard errors
SIGMA_MIN = 3.0  #: a statistic beats its permutation / random null when (value - null mean) / null sd >= this

COUNT_RULE = (f"supported when at least {MAJORITY:.0%} of the units pass, not supported when at most "
              f"{MINORITY:.0%} pass, inconclusive otherwise")


def finite(x: Any) -> bool:
    """A real, finite number (not None, not NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def count_verdict(passed: int, total: int) -> str:
    """The counting rule (see the module docstring); ``total == 0`` is inconclusive."""
    if total <= 0:
        return INCONCLUSIVE
    frac = passed / total
    if frac >= MAJORITY:
        return SUPPORTED
    if frac <= MINORITY:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def median(values: Iterable[Any]) -> float | None:
    """Median of the finite values (None when there are none)."""
    v = sorted(float(x) for x in values if finite(x))
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def num(x: Any, digits: int = 3) -> str:
    """A number as the report prints it (fixed ``digits`` decimals; "-" for None/NaN; integers as is)."""
    if isinstance(x, bool) or x is None:
        return "-" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    if not finite(x):
        return "-"
    return f"{float(x):.{digits}f}"


def interval(lo: Any, hi: Any, digits: int = 3) -> str:
    """``[lo, hi]`` formatted with :func:`num` ("" when either end is unknown)."""
    return f"[{num(lo, digits)}, {num(hi, digits)}]" if finite(lo) and finite(hi) else ""


def units(passed: int, total: int, what: str) -> str:
    """"3 of 4 layers" (for verdict sentences)."""
    return f"{passed} of {total} {what}"


__all__ = ["MAJORITY", "MINORITY", "ALPHA", "R2_MIN", "SLOPE_TOL", "PRUNE_TOL", "ALIGN_COS", "SPEARMAN_PAPER",
           "SE_FACTOR", "SIGMA_MIN", "COUNT_RULE", "finite", "count_verdict", "median", "num", "interval", "units"]
