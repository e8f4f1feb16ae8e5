"""The noise floor as stored and as a yardstick: the records' name of its pass, and whether a candidate's flips
are within its 95% interval (then the candidate cannot be told apart from the floor)."""

from __future__ import annotations

from flipscope.metrics.summary import TaskSummary


def indistinguishable(candidate: TaskSummary, floor: TaskSummary) -> bool | None:
    """Whether the candidate's flips are within the floor's 95% interval (None where either is unknown)."""
    if candidate.flips is None or floor.flips_ci is None:
        return None
    return candidate.flips <= floor.flips_ci[1]


def floor_label(baseline: str) -> str:
    """The records' model name of the noise floor's pass."""
    return f"{baseline} [noise floor]"
