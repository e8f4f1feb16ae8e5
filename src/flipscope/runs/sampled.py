"""``compare --samples K``: every model answers each free-form item K times (seeded draws at a temperature), the
baseline twice over (its sampling floor: two draws of the same model flip too); each draw is a stored, resumable
generation pass, every answer graded and kept in the run's ``draws.parquet``, and ``sampled_summaries`` computes
each candidate's numbers from that frame alone (``metrics.sampling``), so a stored run gives them back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from flipscope.errors import FlipscopeError
from flipscope.metrics.sampling import SampledSummary, flips_per_draw, sampled_summary
from flipscope.metrics.windows import WindowMean
from flipscope.models import ModelSpec
from flipscope.passes.generation import FreeTask, Sampling
from flipscope.passes.runner import ModelRunner
from flipscope.store import SamplingEntry

#: The draws' sides: the baseline's first K seeds, the baseline's second K (the floor), a candidate's (the second K).
FIRST, SECOND, CANDIDATE = "first", "second", "candidate"


def run_draws(
    runner: ModelRunner, base: ModelSpec, candidates: Sequence[ModelSpec], free: Sequence[FreeTask], sampling: Sampling
) -> Any:
    """Every draw of every model on every sampled task, graded: one row per (task, model, side, draw, item)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    first, second = sampling.seeds(FIRST), sampling.seeds(SECOND)
    sides = [(base, "baseline", [(FIRST, first), (SECOND, second)])]
    sides += [(spec, "candidate", [(CANDIDATE, second)]) for spec in candidates]
    for spec, role, wanted in sides:
        seeds = [seed for _, group in wanted for seed in group]
        for task in free:
            made = runner.draw(spec, f"{role} (sampled)", task, seeds)
            drawn = dict(zip(seeds, made, strict=True))
            for side, group in wanted:
                for k, seed in enumerate(group):
                    rows += _graded(task, drawn[seed], model=spec.label(), side=side, draw=k, seed=seed)
    return pd.DataFrame(rows)


def _graded(task: FreeTask, made: Sequence[Any], **where: Any) -> list[dict[str, Any]]:
    out = []
    for problem, g in zip(task.problems, made, strict=True):
        graded = task.grade(g.text, problem.target)
        out.append({"task": task.name, "item_id": problem.item_id, **where, "temperature": task.decoding.temperature,
                    "correct": bool(graded.correct), "answer": graded.answer, "stop_reason": g.stop_reason.value,
                    "new_tokens": g.new_tokens, "text": g.text})  # fmt: skip
    return out


def _matrix(draws: Any, model: str, side: str, items: list[str]) -> np.ndarray:
    """[items, K] correctness of ``model``'s ``side`` draws, items in ``items``' order."""
    rows = draws[(draws["model"] == model) & (draws["side"] == side)]
    table = rows.pivot(index="item_id", columns="draw", values="correct")
    if table.isna().to_numpy().any() or set(table.index) != set(items):
        raise FlipscopeError(f"draws.parquet: {model}'s {side} draws do not cover the same items and draws",
                             fix="re-run the comparison")  # fmt: skip
    return table.loc[items].to_numpy(dtype=bool)


def sampled_floors(draws: Any, baseline: str) -> dict[str, WindowMean]:
    """floor[task]: the baseline's flips between its two sides, from the stored draws."""
    out = {}
    for task, of_task in draws.groupby("task", sort=False):
        items = sorted(set(of_task["item_id"]))
        first, second = (_matrix(of_task, baseline, side, items) for side in (FIRST, SECOND))
        out[str(task)] = flips_per_draw(first, second)[0]
    return out


def sampled_summaries(draws: Any, baseline: str) -> dict[str, dict[str, SampledSummary]]:
    """summary[candidate][task] from the stored draws."""
    out: dict[str, dict[str, SampledSummary]] = {}
    for task, of_task in draws.groupby("task", sort=False):
        items = sorted(set(of_task["item_id"]))
        first, second = (_matrix(of_task, baseline, side, items) for side in (FIRST, SECOND))
        temperature = float(of_task["temperature"].iloc[0])
        for model in of_task.loc[of_task["side"] == CANDIDATE, "model"].unique():
            cand = _matrix(of_task, model, CANDIDATE, items)
            out.setdefault(str(model), {})[str(task)] = sampled_summary(first, second, cand, temperature=temperature)
    return out


def sampling_entry(draws: Any, baseline: str, sampling: Sampling) -> SamplingEntry:
    summaries = sampled_summaries(draws, baseline)
    return SamplingEntry(
        samples=sampling.samples,
        temperatures={str(t): float(v) for t, v in draws.groupby("task")["temperature"].first().items()},
        seeds={
            "baseline": sampling.seeds(FIRST),
            "baseline again (floor)": sampling.seeds(SECOND),
            "candidates": sampling.seeds(SECOND),
        },
        floor={task: asdict(floor) for task, floor in sampled_floors(draws, baseline).items()},
        summary={model: {task: asdict(s) for task, s in tasks.items()} for model, tasks in summaries.items()},
    )


def check_sampling(
    samples: int | None, temperature: float | None, *, seed: int, free: Sequence[str], how: Sequence[str]
) -> Sampling | None:
    """``--samples``/``--temperature`` as a ``Sampling`` (None: greedy); refused without a free-form task, and
    with the ways of running (``how``: "--sequential", "--ray", "--shard" where given) that do not draw samples."""
    if samples is None:
        if temperature is not None:
            raise FlipscopeError("--temperature applies to sampled answers", fix="add --samples K (e.g. 4)")
        return None
    if not free:
        raise FlipscopeError("--samples applies to free-form tasks (gsm8k, minerva_math500, humaneval, mbpp)",
                             fix="add such a task to --tasks, or leave out --samples")  # fmt: skip
    if how:
        raise FlipscopeError(f"--samples cannot be combined with {', '.join(how)}",
                             fix="run the sampled comparison on its own")  # fmt: skip
    return Sampling(samples, temperature, seed)


def sampling_note(entry: SamplingEntry) -> str:
    temps = ", ".join(f"{task} T={t:g}" for task, t in entry.temperatures.items())
    return (
        f"free-form answers sampled: {entry.samples} draw(s) per item and model ({temps}); records.parquet holds "
        f"draw 0 (the candidates' with seed {entry.seeds['candidates'][0]}, the baseline's with seed "
        f"{entry.seeds['baseline'][0]}); every draw is in draws.parquet, and the sampling floor (the baseline drawn "
        "again with the candidates' seeds) is in run.json's sampling section"
    )
