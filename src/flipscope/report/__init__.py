"""Reports re-rendered from a stored run, without loading any model."""

from __future__ import annotations

from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, TaskSummary, summarize_run
from flipscope.metrics.noise_floor import floor_label
from flipscope.metrics.sequential import SequentialPlan
from flipscope.metrics.sequential_summary import with_sequential
from flipscope.report.table import print_run, render_run
from flipscope.store import RunFile, read_run, scores_from_frame
from flipscope.tasks import GENERATIVE


def load_run_scores(folder: str | Path) -> tuple[RunFile, dict[str, list[ItemScore]]]:
    """A run directory's ``run.json`` with every summary recomputed from its per-item records, and those records
    as scores per model (the noise floor under "<baseline> [noise floor]")."""
    run, records = read_run(Path(folder))
    by_model: dict[str, list[ItemScore]] = {}
    try:
        for model, frame in records.groupby("model", sort=False):
            by_model[str(model)] = scores_from_frame(frame)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FlipscopeError(
            f"{Path(folder) / 'records.parquet'} does not hold flipscope records ({type(exc).__name__}: "
            f"{str(exc)[:120]})",
            fix="re-run the comparison",
        ) from exc
    base = by_model.get(run.baseline.spec, [])
    tasks = [t.name for t in run.tasks]
    hint = cloze_hint_tasks(run)
    floor = run.noise_floor
    floor_summary = None
    if floor is not None:
        floor_scores = by_model.get(floor_label(run.baseline.spec), [])
        floor_summary = _sequential(run, summarize_run(base, floor_scores, tasks, cloze_hint=hint), floor.summary,
                                    floor_run=True)  # fmt: skip
        floor = floor.model_copy(update={"summary": floor_summary})
    summary = {
        c.spec: _sequential(run, summarize_run(base, by_model.get(c.spec, []), tasks, cloze_hint=hint),
                            run.summary.get(c.spec, {}), floor=floor_summary)
        for c in run.candidates
    }  # fmt: skip
    return run.model_copy(update={"summary": summary, "noise_floor": floor}), by_model


def cloze_hint_tasks(run: RunFile) -> list[str]:
    """The run's tasks for which "try --format cloze" applies: multiple-choice tasks scored in the run's --format
    when it is letter (MMLU and user files; the suite's tasks record their own fixed template in their meta) — what
    ``compare`` passes as ``summarize_run``'s ``cloze_hint``."""
    if run.settings.format != "letter":
        return []
    return [t.name for t in run.tasks if "template" not in t.meta and t.name not in GENERATIVE]


def _sequential(
    run: RunFile,
    summary: dict[str, TaskSummary],
    stored: dict[str, TaskSummary],
    *,
    floor: dict[str, TaskSummary] | None = None,
    floor_run: bool = False,
) -> dict[str, TaskSummary]:
    """A ``compare --sequential`` run's decisions, recomputed from the counts in the records by the run's own plan
    (``settings.sequential``) for the tasks whose run.json block says how many items were available."""
    if not run.settings.sequential:
        return summary
    plan = SequentialPlan(**run.settings.sequential)
    available = {task: s.sequential.available for task, s in stored.items() if s.sequential is not None}
    return with_sequential(summary, plan, available, floor=floor, floor_run=floor_run)


def load_run(folder: str | Path) -> RunFile:
    """Read a run directory and recompute every summary from its per-item records."""
    return load_run_scores(folder)[0]


__all__ = ["cloze_hint_tasks", "floor_label", "load_run", "load_run_scores", "print_run", "render_run"]
