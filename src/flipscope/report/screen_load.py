"""A `flipscope screen` run read back: its ``run.json`` with every number recomputed from the runs beside it."""

from __future__ import annotations

from pathlib import Path

from flipscope.store.screen_run import ScreenRunFile, read_screen_run
from flipscope.store.screen_summary import ScreenInputs, assess, task_flips


def load_screen_run(folder: str | Path) -> ScreenRunFile:
    """A screen directory's ``run.json`` with every number recomputed from ``sample/``, ``kld/`` and ``full/`` beside
    it and the calibration pairs it stores (no model is loaded)."""
    from flipscope.report import load_run, load_run_scores
    from flipscope.report.kld_table import load_kld_run

    root = Path(folder)
    run = read_screen_run(root)
    sample, scores = load_run_scores(root / run.sample_dir)
    corpus = load_kld_run(root / run.kld_dir) if run.kld_dir else None
    measured = {c.spec: (c.measured_flips, c.measured_from) for c in run.candidates if c.measured_from}
    if run.full_dir:
        full = load_run(root / run.full_dir)
        for label, by_task in full.summary.items():
            measured[label] = (task_flips(by_task), run.full_dir)
    inputs = ScreenInputs(
        baseline=sample.baseline.spec,
        tasks=[t.name for t in sample.tasks],
        summary=sample.summary,
        scores=scores,
        corpus={c: (s.kl_mean.value, s.kl_mean.err) for c, s in corpus.summary.items()} if corpus else {},
        bits={c.spec: c.bits for c in run.candidates},
        pairs=run.calibration_pairs,
        measured={k: (v[0], v[1] or "") for k, v in measured.items()},
        level=run.calibration.level,
    )
    result = assess(inputs)
    kept = [n for n in run.notes if n not in _derived(run)]
    return run.model_copy(update={"candidates": result.candidates, "calibration": result.calibration,
                                  "ranked_by": result.ranked_by, "pareto_basis": result.pareto_basis,
                                  "pooled": result.pooled, "notes": kept + result.notes})  # fmt: skip


def _derived(run: ScreenRunFile) -> set[str]:
    """The notes ``assess`` writes (recomputed on loading): those after the run's own."""
    return {n for n in run.notes if n.startswith(("calibration:", "ranked by ", "no prediction of flips"))}
