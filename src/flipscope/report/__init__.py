"""Reports re-rendered from a stored run, without loading any model."""

from __future__ import annotations

from pathlib import Path

from flipscope.metrics import ItemScore, summarize_run
from flipscope.report.table import print_run, render_run
from flipscope.store import RunFile, read_run, scores_from_frame


def load_run(folder: str | Path) -> RunFile:
    """Read a run directory and recompute every summary from its per-item records."""
    run, records = read_run(Path(folder))
    by_model: dict[str, list[ItemScore]] = {}
    for model, frame in records.groupby("model", sort=False):
        by_model[str(model)] = scores_from_frame(frame)
    base = by_model.get(run.baseline.spec, [])
    tasks = [t.name for t in run.tasks]
    summary = {c.spec: summarize_run(base, by_model.get(c.spec, []), tasks) for c in run.candidates}
    return run.model_copy(update={"summary": summary})


__all__ = ["load_run", "print_run", "render_run"]
