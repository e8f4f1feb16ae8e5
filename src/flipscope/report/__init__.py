"""Reports re-rendered from a stored run, without loading any model."""

from __future__ import annotations

from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, summarize_run
from flipscope.metrics.noise_floor import floor_label
from flipscope.report.table import print_run, render_run
from flipscope.store import RunFile, read_run, scores_from_frame


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
    summary = {c.spec: summarize_run(base, by_model.get(c.spec, []), tasks) for c in run.candidates}
    floor = run.noise_floor
    if floor is not None:
        floor_scores = by_model.get(floor_label(run.baseline.spec), [])
        floor = floor.model_copy(update={"summary": summarize_run(base, floor_scores, tasks)})
    return run.model_copy(update={"summary": summary, "noise_floor": floor}), by_model


def load_run(folder: str | Path) -> RunFile:
    """Read a run directory and recompute every summary from its per-item records."""
    return load_run_scores(folder)[0]


__all__ = ["floor_label", "load_run", "load_run_scores", "print_run", "render_run"]
