"""``compare``: the baseline once, then every candidate against it, on every task; writes a run directory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, TaskSummary, summarize_run
from flipscope.metrics.kl import DEFAULT_TAIL_SAMPLES, DEFAULT_TOPK
from flipscope.metrics.noise_floor import floor_label
from flipscope.metrics.sequential import SequentialPlan
from flipscope.metrics.sequential_summary import with_sequential
from flipscope.models import LoadOptions, ModelSpec, parse_models
from flipscope.passes.generation import FreeTask, load_free_task
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.passes.runner import ModelRunner, TaskWork
from flipscope.plumbing.cache import cache_root
from flipscope.plumbing.version import library_versions
from flipscope.runs.noise import NoiseFloor, engines_note, role_of
from flipscope.runs.overrides import with_overrides
from flipscope.runs.ray import check_ray, on_ray
from flipscope.runs.sampled import check_sampling, run_draws, sampling_entry, sampling_note
from flipscope.runs.sequential import (
    TaskChunks,
    check_plan,
    free_chunks,
    mc_chunks,
    run_sequential,
    sequential_note,
)
from flipscope.runs.shards import Shard
from flipscope.store import (
    ModelEntry,
    NoiseFloorEntry,
    PassResult,
    RunFile,
    Settings,
    TaskEntry,
    records_frame,
    write_run,
)
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out
from flipscope.tasks import (
    GENERATIVE,
    PromptFormat,
    TaskData,
    check_task,
    free_form_task,
    load_task,
)


@dataclass
class Comparison:
    """What ``compare`` returns: the run file (settings, summaries) and where it was written."""

    run: RunFile
    out: Path
    scores: dict[str, list[ItemScore]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, TaskSummary]]:
        return self.run.summary


@dataclass(frozen=True, kw_only=True)
class CompareSettings:
    """Everything a ``compare`` run is made with, the models and the display aside; shared by the CLI and the API."""

    tasks: Sequence[str] = ("mmlu",)  # task names (lm-eval's) or files: .jsonl/.csv/.parquet
    limit: int | None = None  # items per task, sampled stratified by subject with ``seed`` (None: all)
    fewshot: int | None = None  # solved examples before each question; None: each task's standard count (0; gsm8k: 8)
    format: str | PromptFormat = PromptFormat.CLOZE  # cloze or letter (MMLU and files; the others: lm-eval's own)
    seed: int = 0  # seed of the ``limit`` sample
    topk: int = DEFAULT_TOPK  # baseline log-probs kept per answer token for token KL (plus the tail's mass)
    tail_samples: int = DEFAULT_TAIL_SAMPLES  # tail tokens sampled per answer token (0: token KL a lower bound)
    out: str | Path | None = None  # the run directory to write (None: runs/<timestamp>)
    device: str = "auto"  # cpu, cuda, cuda:1 … (auto: cuda if present)
    dtype: str = "float32"
    batch_size: int = 16  # questions per forward pass; part of the cache key
    max_new_tokens: int | None = None  # free-form tasks: tokens generated at most per answer (None: the task's)
    noise_floor: NoiseFloor | None = None  # also run the baseline under these settings, paired with itself
    use_cache: bool = True  # False: run every model again instead of reusing cached passes
    cache_dir: str | Path | None = None  # where passes are cached (None: the flipscope cache's passes/)
    sequential: SequentialPlan | None = (
        None  # stop each candidate on each task once decided (``limit``: the most items)
    )
    shard: Shard | str | None = None  # run only this part, 'i/N' or 'baseline' (an array's job; ``runs.shards``)
    ray: RayPlacement | None = None  # score the multiple-choice passes on a Ray cluster (``passes.ray_passes``)
    samples: int | None = None  # free-form tasks: K seeded draws per item and model, and the sampling floor
    temperature: float | None = None  # with ``samples``: the draws' temperature (None: each task's, 0.2)


def compare(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    settings: CompareSettings | None = None,
    *,
    display: Display | None = None,
    **fields: Any,
) -> Comparison:
    """Run the baseline once and each candidate on ``settings.tasks``; return and write the paired comparison.

    Every model pass is cached under ``cache_dir`` (default: the flipscope cache's ``passes/``) by a content
    hash of (weights, compression, task items, prompts, settings): the baseline runs once for any number of
    candidates and runs, and an interrupted run resumes from its finished passes. With ``noise_floor``, the
    baseline also runs under those settings and is paired with itself (no candidate is needed then).
    ``fields``: settings by name (``limit=50``), put in ``settings`` (default: ``CompareSettings()``).
    """
    chosen = with_overrides(settings or CompareSettings(), fields, command="compare", expected=CompareSettings)
    return _compare(baseline, candidates, chosen, display=display, out=chosen.out)


@releases_out
def _compare(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    chosen: CompareSettings,
    *,
    display: Display | None,
    out: str | Path | None,
) -> Comparison:
    tasks, limit, fewshot, format, seed = chosen.tasks, chosen.limit, chosen.fewshot, chosen.format, chosen.seed
    topk, tail_samples, dtype = chosen.topk, chosen.tail_samples, chosen.dtype
    batch_size, max_new_tokens, noise_floor = chosen.batch_size, chosen.max_new_tokens, chosen.noise_floor
    use_cache, cache_dir = chosen.use_cache, chosen.cache_dir
    shown: Display = display or NullDisplay()
    try:
        fmt = PromptFormat(format)
    except ValueError:
        raise FlipscopeError(f"unknown prompt format {format!r}", fix="use cloze or letter") from None
    if batch_size < 1:
        raise FlipscopeError(f"--batch-size must be at least 1, got {batch_size}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise FlipscopeError(f"--max-new-tokens must be at least 1, got {max_new_tokens}",
                             fix="give the most tokens an answer may have, e.g. 256 (gsm8k's default)")  # fmt: skip
    if topk < 1 or tail_samples < 0:
        raise FlipscopeError(f"--topk must be ≥ 1 and --tail-samples ≥ 0, got {topk} and {tail_samples}")
    if not tasks:
        raise FlipscopeError("no task given", fix="use --tasks mmlu or a file")
    shots = 0 if fewshot is None else fewshot  # multiple choice; free-form tasks take ``fewshot`` as it is
    for name in tasks:  # task errors first: they need nothing fetched
        check_task(name, fewshot=shots, limit=limit)
        if name in GENERATIVE:
            free_form_task(name).check_fewshot(fewshot)
    if noise_floor is not None:
        noise_floor.check(batch_size, dtype)
    ways = {"--sequential": chosen.sequential, "--ray": chosen.ray, "--shard": chosen.shard,
            "--noise-floor (sampled answers have their own floor)": noise_floor}  # fmt: skip
    sampling = check_sampling(chosen.samples, chosen.temperature, seed=seed, free=[n for n in tasks if n in GENERATIVE],
                              how=[flag for flag, given in ways.items() if given is not None])  # fmt: skip
    check_out(out)
    if chosen.ray is not None:
        free_names = [name for name in tasks if name in GENERATIVE]
        check_ray(chosen.ray, device=chosen.device, sequential=chosen.sequential is not None,
                  shard=chosen.shard is not None, use_cache=chosen.use_cache, free=free_names)  # fmt: skip
    base_spec, cand_specs = parse_models(baseline, candidates, allow_none=noise_floor is not None)
    shard, floor_here = (Shard.of(chosen.shard) if chosen.shard is not None else None), noise_floor is not None
    if shard is not None:
        if not use_cache:
            raise FlipscopeError(
                "--shard cannot run with --no-cache: every shard would replace the baseline's passes the others use",
                fix="clear the cache folder first, then run the shards",
            )
        if shard.index is None and chosen.sequential is not None and noise_floor is None:
            raise FlipscopeError(
                "--shard baseline has nothing to run in a sequential run without --noise-floor: the baseline is "
                "scored chunk by chunk, as far as the candidates need",
                fix="run the candidates' shards (--shard i/N) directly; the cache keeps one of each baseline chunk",
            )
        floor_here = floor_here and shard.runs_floor(len(cand_specs), sequential=chosen.sequential is not None)
        cand_specs = shard.candidates(cand_specs)
    settings = Settings(
        format=fmt.value,
        fewshot=shots,
        limit=limit,
        seed=seed,
        topk=topk,
        tail_samples=tail_samples,
        device=_device(chosen),  # the device used, as cache keys and run.json hold it
        dtype=dtype,
        batch_size=batch_size,
    )
    plan = chosen.sequential
    if plan is not None:
        check_plan(plan, noise_floor is not None)
        settings = settings.model_copy(update={"sequential": asdict(plan)})
    upto = None if plan else limit  # a sequential run takes the task's items in its own order, the first `limit`
    loaded = [load_task(name, fewshot=shots, limit=upto, seed=seed) for name in tasks if name not in GENERATIVE]
    free = [
        load_free_task(name, limit=upto, seed=seed, max_new_tokens=max_new_tokens, fewshot=fewshot, sampling=sampling)
        for name in tasks
        if name in GENERATIVE
    ]
    names = [t.name if t is not None else name for name, t in _in_order(tasks, loaded)]
    if len(set(names)) != len(names):
        raise FlipscopeError("a task is named twice", fix="give each task once")
    runner = ModelRunner(settings, shown, use_cache, Path(cache_dir) if cache_dir else cache_root() / "passes")
    floor_runner = None
    if noise_floor is not None and floor_here:
        floor_settings = settings.model_copy(
            update={"batch_size": noise_floor.batch_size, "dtype": noise_floor.dtype or dtype}
        )
        floor_runner = ModelRunner(floor_settings, shown, use_cache, runner.store.root)
    # the collapse warning's "try --format cloze" applies to the tasks scored in the run's letter format
    hint = [t.name for t in loaded if t.template is None] if fmt is PromptFormat.LETTER else []
    if plan is None:
        works = [TaskWork.build(t, fmt, shots) for t in loaded]
        if chosen.ray is not None:
            on_ray(chosen.ray, runner, floor_runner, base_spec, cand_specs, works, [t.name for t in free])
        ran = _run_all(
            runner,
            floor_runner,
            base_spec,
            cand_specs,
            works,
            free,
            names,
            hint,
        )
    else:
        chunks = [mc_chunks(t, fmt, shots, plan, limit=limit, seed=seed) for t in loaded]
        chunks += [free_chunks(t, plan, limit=limit, seed=seed) for t in free]
        ran = _run_sequential(runner, floor_runner, base_spec, cand_specs, chunks, plan, names, hint)
    notes = [f"{name}: {meta['note']}" for name, meta in _metas(loaded, free) if "note" in meta]
    for r in ran.base_results:
        if r.reference is not None:
            how = (
                f"an unbiased estimate: the baseline is stored as top-{topk} log-probs + tail mass (exact terms) + "
                f"{tail_samples} sampled tail tokens (the within-tail term)"
                if tail_samples
                else f"a lower bound: the baseline is stored as top-{topk} log-probs + tail mass, no tail samples"
            )
            notes.append(f"token KL is {how} per answer token; mean tail mass {r.reference.mean_tail_mass:.3f}")
            break
    if plan is not None:
        notes.append(sequential_note(plan, noise_floor is not None))
    for spec in cand_specs:
        engines = engines_note(base_spec, spec, ran.summary[spec.label()])
        if engines:
            notes.append(engines)
    floor: NoiseFloorEntry | None = None
    if noise_floor is not None and floor_runner is not None and ran.floor is not None:
        floor = NoiseFloorEntry(
            setup=noise_floor.setup(batch_size, dtype),
            batch_size=noise_floor.batch_size,
            dtype=noise_floor.dtype or dtype,
            model=ran.floor,
            summary=ran.floor_summary,
        )
        notes += [n for n in floor_runner.notes if n not in runner.notes]
    notes += runner.notes
    if shard is not None:
        notes.append(shard.note([s.label() for s in cand_specs], floor=floor_here and noise_floor is not None))
    draws, sampled = None, None
    if sampling is not None:
        draws = run_draws(runner, base_spec, cand_specs, free, sampling)
        sampled = sampling_entry(draws, base_spec.label(), sampling)
        notes.append(sampling_note(sampled))
    scores = ran.scores
    run = RunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=library_versions().get("flipscope", "unknown"),
        versions=library_versions(),
        settings=settings,
        baseline=ran.baseline,
        candidates=ran.candidates,
        tasks=[TaskEntry(name=name, meta=ran.meta.get(name, meta)) for name, meta in _metas(loaded, free)],
        summary=ran.summary,
        noise_floor=floor,
        sampling=sampled,
        notes=notes,
    )
    folder = claim_run_dir(out)
    roles = {label: (role_of(label, base_spec.label()), s) for label, s in scores.items()}
    scored = {(s.task, s.item_id) for s in scores[base_spec.label()]}
    write_run(folder, run, records_frame(roles), _items_frame(loaded, free, scored), draws=draws)
    return Comparison(run, folder, scores)


def _device(chosen: CompareSettings) -> str:
    """``--device`` as used; on Ray, ``auto`` is the actors' (cuda where they ask for GPUs), not this machine's."""
    if chosen.ray is not None:
        return chosen.ray.device(chosen.device)
    return LoadOptions(chosen.device, chosen.dtype).resolved().device


def _items_frame(tasks: list[TaskData], free: Sequence[FreeTask], scored: set[tuple[str, str]]) -> Any:
    """The items some model scored (a sequential run scores a prefix of each task's sequence)."""
    import pandas as pd

    rows = [
        {**asdict(item), "task": t.name, "choices": list(item.choices)}
        for t in tasks
        for item in t.items
        if (t.name, item.item_id) in scored
    ]
    rows += [
        {"item_id": p.item_id, "question": p.question, "target": p.target, "task": t.name, "prompt": text}
        for t in free
        for p, text in zip(t.problems, t.prompts, strict=True)
        if (t.name, p.item_id) in scored
    ]
    return pd.DataFrame(rows)


def _metas(loaded: list[TaskData], free: Sequence[FreeTask]) -> list[tuple[str, dict[str, Any]]]:
    return [(t.name, t.meta) for t in loaded] + [(t.name, t.meta) for t in free]


def _in_order(names: Sequence[str], loaded: list[TaskData]) -> list[tuple[str, TaskData | None]]:
    """Each asked-for task with its loaded multiple-choice data (None for free-form ones), in the order asked."""
    mc = iter(loaded)
    return [(name, None if name in GENERATIVE else next(mc)) for name in names]


@dataclass
class _Ran:
    """What running the models gave: entries, per-item scores by model label (the noise floor's under its label),
    summaries, and each task's meta where the run changed it."""

    baseline: ModelEntry
    base_results: list[PassResult]
    candidates: list[ModelEntry]
    scores: dict[str, list[ItemScore]]
    summary: dict[str, dict[str, TaskSummary]]
    floor: ModelEntry | None = None
    floor_summary: dict[str, TaskSummary] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


def _run_all(
    runner: ModelRunner,
    floor_runner: ModelRunner | None,
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    work: list[TaskWork],
    free: Sequence[FreeTask],
    names: list[str],
    hint: list[str],
) -> _Ran:
    """Every item of every task: the baseline, each candidate, then the noise floor."""
    base_entry, base_results = runner.run_model(base_spec, "baseline", work, None, free)
    base_scores = [s for r in base_results.values() for s in r.scores]
    ran = _Ran(base_entry, list(base_results.values()), [], {base_spec.label(): base_scores}, {})
    for spec in cand_specs:
        entry, results = runner.run_model(spec, "candidate", work, base_results, free)
        ran.candidates.append(entry)
        ran.scores[spec.label()] = [s for r in results.values() for s in r.scores]
        ran.summary[spec.label()] = summarize_run(base_scores, ran.scores[spec.label()], names, cloze_hint=hint)
    if floor_runner is not None:
        ran.floor, floor_results = floor_runner.run_model(base_spec, "noise floor", work, base_results, free)
        floor_scores = [s for r in floor_results.values() for s in r.scores]
        ran.scores[floor_label(base_spec.label())] = floor_scores
        ran.floor_summary = summarize_run(base_scores, floor_scores, names, cloze_hint=hint)
    return ran


def _run_sequential(
    runner: ModelRunner,
    floor_runner: ModelRunner | None,
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    chunks: list[TaskChunks],
    plan: SequentialPlan,
    names: list[str],
    hint: list[str],
) -> _Ran:
    """Each task's sequence chunk by chunk, each model stopping once decided (``runs.sequential``)."""
    models = run_sequential(runner, base_spec, cand_specs, chunks, plan, floor_runner=floor_runner)
    base_scores = models.baseline.scores()
    available = {t.name: t.available for t in chunks}
    ran = _Ran(models.baseline.entry, models.baseline_results, [], {base_spec.label(): base_scores}, {})
    ran.meta = {t.name: t.meta for t in chunks}
    floor: dict[str, TaskSummary] | None = None
    if models.floor is not None:
        ran.floor = models.floor.entry
        floor_scores = models.floor.scores()
        ran.scores[floor_label(base_spec.label())] = floor_scores
        floor = with_sequential(
            summarize_run(base_scores, floor_scores, names, cloze_hint=hint), plan, available, floor_run=True
        )
        ran.floor_summary = floor
    for model in models.candidates:
        label = model.spec.label()
        ran.candidates.append(model.entry)
        ran.scores[label] = model.scores()
        ran.summary[label] = with_sequential(
            summarize_run(base_scores, ran.scores[label], names, cloze_hint=hint), plan, available, floor=floor
        )
    return ran
