"""``compare --sequential``'s block of each task's summary, recomputed from the counts the run stopped at."""

from __future__ import annotations

from collections.abc import Mapping

from flipscope.metrics.sequential import SequentialPlan, decide
from flipscope.metrics.summary import SequentialSummary, TaskSummary


def with_sequential(
    summary: dict[str, TaskSummary],
    plan: SequentialPlan,
    available: Mapping[str, int],
    *,
    floor: dict[str, TaskSummary] | None = None,
    floor_run: bool = False,
) -> dict[str, TaskSummary]:
    """``summary`` (one model, per task) with each task's ``sequential`` block: the decision ``plan``'s question gets
    from the counts the run stopped at (``n`` items, C→I + I→C flips), so a report recomputes it from the records.
    ``floor``: the noise floor's summary, its blocks attached (``floor_run``), whose upper bounds the candidate is
    judged against. Tasks not in ``available`` (the pooled "all") get none."""
    out = dict(summary)
    for task, s in summary.items():
        if task not in available:
            continue
        bound = floor[task].sequential if floor is not None and task in floor else None
        question = plan.question(floor_high=bound.interval[1] if bound else None, floor_run=floor_run)
        state = decide(s.flips_c2i + s.flips_i2c, s.n, question)
        block = SequentialSummary(
            decision=state.decision.value,
            n=s.n,
            interval=state.interval,
            alpha=question.alpha,
            question=question.describe(),
            available=available[task],
        )
        out[task] = s.model_copy(update={"sequential": block})
    return out
