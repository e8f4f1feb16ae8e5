"""``compare``: the baseline once, then every candidate against it, on every task; writes a run directory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, TaskSummary, summarize_run
from flipscope.metrics.kl import DEFAULT_TAIL_SAMPLES, DEFAULT_TOPK
from flipscope.metrics.noise_floor import floor_label
from flipscope.models import Backend, LoadOptions, ModelSpec, fingerprint, load_backend, parse_models
from flipscope.passes.generation import (
    FreeTask,
    free_scores,
    generate_pass,
    generation_key,
    load_free_task,
    teacher_key,
    teacher_requests,
)
from flipscope.passes.teacher import TeacherScorer
from flipscope.plumbing.cache import cache_root, content_hash
from flipscope.plumbing.version import library_versions
from flipscope.runs.noise import NoiseFloor, engines_note, role_of
from flipscope.runs.overrides import with_overrides
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
from flipscope.store.generations import GenerationStore
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out
from flipscope.tasks import (
    GENERATIVE,
    ItemRequests,
    PromptFormat,
    TaskData,
    check_task,
    free_form_task,
    item_requests,
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
    max_new_tokens: int | None = None  # free-form tasks (gsm8k): tokens generated at most per answer (None: 256)
    noise_floor: NoiseFloor | None = None  # also run the baseline under these settings, paired with itself
    use_cache: bool = True  # False: run every model again instead of reusing cached passes
    cache_dir: str | Path | None = None  # where passes are cached (None: the flipscope cache's passes/)


@dataclass(frozen=True)
class _TaskWork:
    """A task's items, the prompts built from them, and their content hash (computed once, used by every model)."""

    task: TaskData
    prompts: list[ItemRequests]
    digest: str

    @classmethod
    def build(cls, task: TaskData, fmt: PromptFormat, fewshot: int) -> _TaskWork:
        prompts = item_requests(task, fmt, fewshot)
        text = [[[r.prefix, r.prompt, list(r.continuations)] for r in p.requests] + [p.option_chars] for p in prompts]
        return cls(task, prompts, content_hash(text))


class _Runner:
    def __init__(self, settings: Settings, display: Display, use_cache: bool, cache_dir: Path) -> None:
        self.settings = settings
        self.display = display
        self.use_cache = use_cache
        self.scorer = TeacherScorer(settings, display, cache_dir, use_cache=use_cache)
        self.store = self.scorer.store
        self.generations = GenerationStore(cache_dir / "generations")
        self.options = LoadOptions(device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
        self.notes = self.scorer.notes  # the scorer's, and those _record adds

    def run_model(
        self,
        spec: ModelSpec,
        role: str,
        tasks: list[_TaskWork],
        baseline: dict[str, PassResult] | None,
        free: Sequence[FreeTask] = (),
    ) -> tuple[ModelEntry, dict[str, PassResult]]:
        weights = fingerprint(spec)
        entry = ModelEntry(spec=spec.label(), role=role, fingerprint=weights)
        loaded: list[Backend] = []

        def backend() -> Backend:  # loaded on first need: nothing loads when every pass is cached
            if not loaded:
                loaded.append(load_backend(spec, self.options))
            return loaded[0]

        results: dict[str, PassResult] = {}
        try:
            for work in tasks:
                ref = baseline[work.task.name] if baseline else None
                results[work.task.name], entry.reused[work.task.name] = self._mc_pass(
                    work, spec, role, weights, backend, ref
                )
            for task in free:
                ref = baseline[task.name] if baseline else None
                results[task.name], entry.reused[task.name] = self._free_pass(task, spec, role, weights, backend, ref)
            for name, result in results.items():
                self._record(entry, spec, name, result)
        finally:
            for b in loaded:
                b.close()
        return entry, results

    def _mc_pass(
        self,
        work: _TaskWork,
        spec: ModelSpec,
        role: str,
        weights: str,
        backend: Callable[[], Backend],
        ref: PassResult | None,
    ) -> tuple[PassResult, bool]:
        key = content_hash(self.scorer.key(weights, work.digest, ref))
        return self.scorer.score(
            work.task, work.prompts, key, spec, backend, ref, f"{role} {spec.label()} · {work.task.name}"
        )

    def _free_pass(
        self,
        task: FreeTask,
        spec: ModelSpec,
        role: str,
        weights: str,
        backend: Callable[[], Backend],
        ref: PassResult | None,
    ) -> tuple[PassResult, bool]:
        """Generate (stored, resumable), then score the baseline's answers teacher-forced."""
        key = generation_key(task, weights, self.scorer.engine())  # not --topk/--tail-samples: they change no answer
        title = f"{role} {spec.label()} · {task.name}"
        with self.display.progress(f"{title} (generating)", len(task.prompts)) as advance:
            made, reused = generate_pass(
                task, key, backend, self.generations, use_cache=self.use_cache, advance=advance
            )
        answers = [s.free.text if s.free else "" for s in ref.scores] if ref else [g.text for g in made]
        data, prompts = teacher_requests(task, answers)
        tkey = teacher_key(weights, answers, self.scorer.key(weights, task.digest, ref))
        teacher, cached = self.scorer.score(data, prompts, tkey, spec, backend, ref, f"{title} (scoring B's answers)")
        return PassResult(tkey, teacher.model, free_scores(task, made, teacher), teacher.reference), reused and cached

    def _record(self, entry: ModelEntry, spec: ModelSpec, task: str, result: PassResult) -> None:
        """The model entry's passes, tokenizer and details, and the notes a pass's token KL calls for."""
        from flipscope.metrics.token_kl import TokenKL

        entry.passes[task] = result.key
        entry.tokenizer_fingerprint = result.tokenizer
        entry.details = dict(result.model.get("details", {}))
        measured = result.model
        kind = TokenKL.read(measured.get("token_kl"), tail_samples=self.settings.tail_samples)
        if kind is not None:
            entry.details["token_kl"] = kind.value
        if kind is TokenKL.TOPK_APPROXIMATE:
            self.scorer.note(
                f"{spec.label()}: token KL is {kind.value} — over the tokens that both the baseline's "
                "and the candidate's top-k name (matched by text) plus one rest bucket; a lower bound of the "
                "full-vocabulary KL"
            )
            unshared, positions = measured.get("token_kl_unshared", (0, 0))
            if unshared:
                self.scorer.note(
                    f"{spec.label()} on {task}: at {unshared} of {positions} answer-token positions the "
                    "two top-k lists share no token; those positions are left out of token KL (not scored 0)"
                )


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
    topk, tail_samples, device, dtype = chosen.topk, chosen.tail_samples, chosen.device, chosen.dtype
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
    check_out(out)
    base_spec, cand_specs = parse_models(baseline, candidates, allow_none=noise_floor is not None)
    settings = Settings(
        format=fmt.value,
        fewshot=shots,
        limit=limit,
        seed=seed,
        topk=topk,
        tail_samples=tail_samples,
        device=LoadOptions(device, dtype).resolved().device,  # the device used, as cache keys and run.json hold it
        dtype=dtype,
        batch_size=batch_size,
    )
    loaded = [load_task(name, fewshot=shots, limit=limit, seed=seed) for name in tasks if name not in GENERATIVE]
    free = [
        load_free_task(name, limit=limit, seed=seed, max_new_tokens=max_new_tokens, fewshot=fewshot)
        for name in tasks
        if name in GENERATIVE
    ]
    names = [t.name if t is not None else name for name, t in _in_order(tasks, loaded)]
    if len(set(names)) != len(names):
        raise FlipscopeError("a task is named twice", fix="give each task once")
    work = [_TaskWork.build(t, fmt, shots) for t in loaded]
    runner = _Runner(settings, shown, use_cache, Path(cache_dir) if cache_dir else cache_root() / "passes")
    base_entry, base_results = runner.run_model(base_spec, "baseline", work, None, free)
    base_scores = [s for r in base_results.values() for s in r.scores]
    entries, summary, scores = [], {}, {base_spec.label(): base_scores}
    notes = [f"{t.name}: {t.meta['note']}" for t in loaded if "note" in t.meta]
    for r in base_results.values():
        if r.reference is not None:
            how = (
                f"an unbiased estimate: the baseline is stored as top-{topk} log-probs + tail mass (exact terms) + "
                f"{tail_samples} sampled tail tokens (the within-tail term)"
                if tail_samples
                else f"a lower bound: the baseline is stored as top-{topk} log-probs + tail mass, no tail samples"
            )
            notes.append(f"token KL is {how} per answer token; mean tail mass {r.reference.mean_tail_mass:.3f}")
            break
    for spec in cand_specs:
        entry, results = runner.run_model(spec, "candidate", work, base_results, free)
        entries.append(entry)
        cand_scores = [s for r in results.values() for s in r.scores]
        scores[spec.label()] = cand_scores
        summary[spec.label()] = summarize_run(base_scores, cand_scores, names)
        engines = engines_note(base_spec, spec, summary[spec.label()])
        if engines:
            notes.append(engines)
    floor: NoiseFloorEntry | None = None
    if noise_floor is not None:
        floor_settings = settings.model_copy(
            update={"batch_size": noise_floor.batch_size, "dtype": noise_floor.dtype or dtype}
        )
        floor_runner = _Runner(floor_settings, shown, use_cache, runner.store.root)
        floor_entry, floor_results = floor_runner.run_model(base_spec, "noise floor", work, base_results, free)
        floor_scores = [s for r in floor_results.values() for s in r.scores]
        scores[floor_label(base_spec.label())] = floor_scores
        floor = NoiseFloorEntry(
            setup=noise_floor.setup(batch_size, dtype),
            batch_size=noise_floor.batch_size,
            dtype=noise_floor.dtype or dtype,
            model=floor_entry,
            summary=summarize_run(base_scores, floor_scores, names),
        )
        notes += [n for n in floor_runner.notes if n not in runner.notes]
    notes += runner.notes
    run = RunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=library_versions().get("flipscope", "unknown"),
        versions=library_versions(),
        settings=settings,
        baseline=base_entry,
        candidates=entries,
        tasks=[TaskEntry(name=t.name, meta=t.meta) for t in loaded]
        + [TaskEntry(name=t.name, meta=t.meta) for t in free],
        summary=summary,
        noise_floor=floor,
        notes=notes,
    )
    folder = claim_run_dir(out)
    roles = {label: (role_of(label, base_spec.label()), s) for label, s in scores.items()}
    write_run(folder, run, records_frame(roles), _items_frame(loaded, free))
    return Comparison(run, folder, scores)


def _items_frame(tasks: list[TaskData], free: Sequence[FreeTask] = ()) -> Any:
    import pandas as pd

    rows = [{**asdict(item), "task": t.name, "choices": list(item.choices)} for t in tasks for item in t.items]
    rows += [
        {"item_id": p.item_id, "question": p.question, "target": p.target, "task": t.name, "prompt": text}
        for t in free
        for p, text in zip(t.problems, t.prompts, strict=True)
    ]
    return pd.DataFrame(rows)


def _in_order(names: Sequence[str], loaded: list[TaskData]) -> list[tuple[str, TaskData | None]]:
    """Each asked-for task with its loaded multiple-choice data (None for free-form ones), in the order asked."""
    mc = iter(loaded)
    return [(name, None if name in GENERATIVE else next(mc)) for name in names]
