"""``compare --sequential``: each task's items in a seeded random order, scored a chunk at a time; each candidate
stops on a task as soon as its question (``metrics.sequential.SequentialPlan``) is decided by an anytime-valid
confidence sequence, so looking after every chunk does not inflate the error rate.

Every chunk is a pass of its own, cached under its items' content hash: the baseline is scored only as far as the
furthest candidate needs, and a later run (another candidate, a larger ``--limit``, a stricter budget) finds the
chunks already scored and continues the same sequence. With a noise floor, the floor runs first, to the plan's
precision; each candidate is then asked whether it is above the floor's upper bound."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, flip_counts, pair_up
from flipscope.metrics.sequential import Decision, Question, SequentialPlan, SequentialState, decide
from flipscope.models import ModelSpec, fingerprint
from flipscope.passes.generation import FreeTask
from flipscope.passes.runner import LazyBackend, ModelRunner, TaskWork
from flipscope.store import ModelEntry, PassResult
from flipscope.tasks import PromptFormat, TaskData
from flipscope.tasks.sampling import seeded_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskChunks:
    """One task's sequence: its items in the seeded order, cut into chunks (``TaskWork`` or a ``FreeTask`` slice)."""

    name: str
    chunks: list[TaskWork | FreeTask]
    available: int  # items in the sequence (the task's, or the first --limit of them)
    meta: dict[str, object]


def mc_chunks(
    task: TaskData, fmt: PromptFormat, fewshot: int, plan: SequentialPlan, *, limit: int | None, seed: int
) -> TaskChunks:
    order = seeded_order(len(task.items), seed=seed, salt=task.name)[:limit]
    items = [task.items[i] for i in order]
    chunks: list[TaskWork | FreeTask] = [
        TaskWork.build(dataclasses.replace(task, items=items[lo : lo + plan.chunk]), fmt, fewshot)
        for lo in range(0, len(items), plan.chunk)
    ]
    return TaskChunks(task.name, chunks, len(items), {**task.meta, "available": len(items), "order_seed": seed})


def free_chunks(task: FreeTask, plan: SequentialPlan, *, limit: int | None, seed: int) -> TaskChunks:
    order = seeded_order(len(task.problems), seed=seed, salt=task.name)[:limit]
    chunks: list[TaskWork | FreeTask] = [
        dataclasses.replace(
            task,
            problems=[task.problems[i] for i in order[lo : lo + plan.chunk]],
            prompts=[task.prompts[i] for i in order[lo : lo + plan.chunk]],
        )
        for lo in range(0, len(order), plan.chunk)
    ]
    return TaskChunks(task.name, chunks, len(order), {**task.meta, "available": len(order), "order_seed": seed})


def _items(unit: TaskWork | FreeTask) -> int:
    """Items in one chunk of a sequence."""
    return len(unit.task.items) if isinstance(unit, TaskWork) else len(unit.problems)


@dataclass
class _Model:
    """One model's chunk passes, its backend loaded on the first pass that is not cached."""

    runner: ModelRunner
    spec: ModelSpec
    role: str
    backend: LazyBackend = field(init=False)
    entry: ModelEntry = field(init=False)
    results: dict[tuple[str, int], PassResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.backend = self.runner.lazy(self.spec)
        self.entry = ModelEntry(spec=self.spec.label(), role=self.role, fingerprint=fingerprint(self.spec))

    def chunk(self, task: TaskChunks, c: int, ref: PassResult | None) -> PassResult:
        if (task.name, c) in self.results:
            return self.results[(task.name, c)]
        unit, weights = task.chunks[c], self.entry.fingerprint
        done, size = sum(_items(u) for u in task.chunks[:c]), _items(unit)
        role = f"{self.role} [items {done + 1}–{done + size}]"
        if isinstance(unit, TaskWork):
            result, reused = self.runner.mc_pass(unit, self.spec, role, weights, self.backend, ref)
        else:
            result, reused = self.runner.free_pass(unit, self.spec, role, weights, self.backend, ref)
        self.entry.chunk_passes.setdefault(task.name, []).append(result.key)
        self.entry.reused[task.name] = self.entry.reused.get(task.name, True) and reused
        self.runner.record(self.entry, self.spec, task.name, result)
        self.entry.passes.pop(task.name, None)  # a sequential task has chunk passes, not one pass
        self.results[(task.name, c)] = result
        return result

    def scores(self) -> list[ItemScore]:
        return [s for _, result in sorted(self.results.items()) for s in result.scores]


@dataclass
class SequentialModels:
    """What a sequential run scored: the baseline's chunks (as far as any model needed), each candidate's, and the
    noise floor's."""

    baseline: _Model
    candidates: list[_Model]
    floor: _Model | None

    @property
    def baseline_results(self) -> list[PassResult]:
        return [r for _, r in sorted(self.baseline.results.items())]


def run_sequential(
    runner: ModelRunner,
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    tasks: Sequence[TaskChunks],
    plan: SequentialPlan,
    *,
    floor_runner: ModelRunner | None = None,
) -> SequentialModels:
    """Score each candidate (and first the noise floor, with ``floor_runner``) chunk by chunk until its question
    is decided on each task; the baseline's chunks are scored as they are first needed and kept loaded."""
    base = _Model(runner, base_spec, "baseline")
    models = SequentialModels(base, [], None)
    try:
        floor_high: dict[str, float] = {}
        if floor_runner is not None:
            models.floor = _Model(floor_runner, base_spec, "noise floor")
            for task in tasks:
                state = _until_decided(models.floor, base, task, plan.question(floor_run=True))
                floor_high[task.name] = state.interval[1]
            models.floor.backend.close()  # the floor is done: no third model beside the baseline and a candidate
        for spec in cand_specs:
            model = _Model(runner, spec, "candidate")
            models.candidates.append(model)
            try:
                for task in tasks:
                    high = floor_high.get(task.name)
                    _until_decided(model, base, task, plan.question(floor_high=high))
            finally:
                model.backend.close()
    finally:
        base.backend.close()
        if models.floor is not None:
            models.floor.backend.close()
    return models


def _until_decided(model: _Model, base: _Model, task: TaskChunks, question: Question) -> SequentialState:
    """Score ``task``'s chunks with ``model`` until the confidence sequence of its flip rate decides ``question``
    (or the items run out); the state it stopped at."""
    state = decide(0, 0, question)
    for c in range(len(task.chunks)):
        ref = base.chunk(task, c, None)
        model.chunk(task, c, ref)
        seen = [s for i in range(c + 1) for s in model.results[(task.name, i)].scores]
        pairs = [p for p in pair_up(base.scores(), seen) if p.baseline.finite and p.candidate.finite]
        counts = flip_counts(pairs)
        state = decide(counts.c2i + counts.i2c, counts.n, question)
        log.info("%s on %s: %d flips in %d items, %s", model.spec.label(), task.name, counts.c2i + counts.i2c,
                 counts.n, state.decision.value)  # fmt: skip
        if state.decision is not Decision.UNDECIDED:
            break
    return state


def check_plan(plan: SequentialPlan, floor: bool) -> None:
    """Refuse a bad plan with a FlipscopeError naming the setting."""
    try:
        plan.check()
    except ValueError as exc:
        raise FlipscopeError(f"--sequential: {exc}") from None
    if plan.flip_budget is not None and floor:
        raise FlipscopeError(
            "--sequential asks one question: below a --flip-budget, or above the --noise-floor, not both",
            fix="drop --flip-budget to judge candidates against the floor, or --noise-floor to judge them by budget",
        )


def sequential_note(plan: SequentialPlan, floor: bool) -> str:
    """What a sequential run did and what its decisions guarantee."""
    if floor:
        asked = (f"above the noise floor's upper bound (the floor scored until its interval was ± {plan.precision} "
                 f"points), at α/2 = {plan.alpha / 2:g} for the floor and for each candidate")  # fmt: skip
    elif plan.flip_budget is not None:
        asked = f"below or above a flip budget of {plan.flip_budget}%, at α = {plan.alpha:g}"
    else:
        asked = f"known to ± {plan.precision} points, at α = {plan.alpha:g}"
    return (
        f"sequential: each task's items in a seeded random order, {plan.chunk} at a time; each candidate stopped on a "
        f"task once its flip rate was {asked}, by an anytime-valid confidence sequence (Robbins' beta-binomial "
        "mixture: valid whenever the run stops, however often it looks). α holds per (candidate, task); n is the "
        "items used; the other numbers are over those items only"
    )
