"""Which screened candidates are worth a full evaluation: the Pareto set of size against flips, and the rule
"run fully?" — pure functions over one (point, low, high) flip estimate and an optional size per candidate.

- **Pareto set**: a candidate is on it when no other is at most as large *and* has fewer flips (its point estimate)
  with one of the two strictly better. A candidate of unknown size is treated as no smaller than any other: it stays
  on the set only by flips alone.
- **run fully?**: "yes" on the Pareto set; "maybe" off it where no candidate at most as large *clearly* beats it
  (that one's whole interval below this one's low end): the screen cannot tell them apart, a full run can; "no"
  where one does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    YES = "yes"
    MAYBE = "maybe"
    NO = "no"


@dataclass(frozen=True)
class Screened:
    """One candidate: its flip estimate (point, low, high) and its size (bits per weight; None: unknown)."""

    point: float
    low: float
    high: float
    size: float | None = None


def _size(s: Screened) -> float:
    return math.inf if s.size is None else s.size


def _dominates(a: Screened, b: Screened) -> bool:
    """``a`` at most as large and with at most as many flips as ``b``, one of them strictly."""
    no_larger, no_worse = _size(a) <= _size(b), a.point <= b.point
    return no_larger and no_worse and (_size(a) < _size(b) or a.point < b.point)


def pareto(items: Sequence[Screened]) -> list[bool]:
    """For each item: is it on the Pareto set of (size, flips)?"""
    return [not any(_dominates(o, s) for j, o in enumerate(items) if j != i) for i, s in enumerate(items)]


def verdicts(items: Sequence[Screened]) -> list[Verdict]:
    """ "run fully?" per item (the module's docstring says the rule)."""
    front = pareto(items)
    out = []
    for i, s in enumerate(items):
        if front[i]:
            out.append(Verdict.YES)
            continue
        beaten = any(j != i and _size(o) <= _size(s) and o.high < s.low for j, o in enumerate(items))
        out.append(Verdict.NO if beaten else Verdict.MAYBE)
    return out
