"""The noise floor as stored and as a yardstick: the records' name of its pass, and whether a candidate's flips
are within its 95% interval (then the candidate cannot be told apart from the floor)."""

from __future__ import annotations

from flipscope.metrics.summary import TaskSummary


def indistinguishable(candidate: TaskSummary, floor: TaskSummary) -> bool | None:
    """Whether the candidate's flips are within the floor's 95% interval (None where either is unknown). In a
    ``compare --sequential`` run with a floor, the run's own decision instead ("within floor": True, "above":
    False, undecided: None): the one the run stopped on, by the two confidence sequences, not a fixed-n interval."""
    decided = candidate.sequential.decision if candidate.sequential is not None else None
    if decided in ("within floor", "above") or (decided is not None and floor.sequential is not None):
        return True if decided == "within floor" else False if decided == "above" else None
    if candidate.flips is None or floor.flips_ci is None:
        return None
    return candidate.flips <= floor.flips_ci[1]


def floor_label(baseline: str) -> str:
    """The records' model name of the noise floor's pass."""
    return f"{baseline} [noise floor]"
