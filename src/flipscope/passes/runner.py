"""One model over a run's tasks: its scoring passes (multiple choice) and generation + teacher-forced passes (free
form), each cached, the model loaded only when a pass is not; ``compare`` runs the baseline, each candidate and the
noise floor through a ``ModelRunner``, ``compare --sequential`` one chunk of items at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flipscope.display import Display
from flipscope.models import Backend, LoadOptions, ModelSpec, fingerprint, load_backend
from flipscope.models.base import Generation
from flipscope.passes.generation import (
    FreeTask,
    free_scores,
    generate_pass,
    generation_key,
    teacher_key,
    teacher_requests,
)
from flipscope.passes.teacher import TeacherScorer
from flipscope.plumbing.cache import content_hash
from flipscope.store import ModelEntry, PassResult, Settings
from flipscope.store.generations import GenerationStore
from flipscope.tasks import ItemRequests, PromptFormat, TaskData, item_requests


@dataclass(frozen=True)
class TaskWork:
    """A task's items, the prompts built from them, and their content hash (computed once, used by every model)."""

    task: TaskData
    prompts: list[ItemRequests]
    digest: str

    @classmethod
    def build(cls, task: TaskData, fmt: PromptFormat, fewshot: int) -> TaskWork:
        prompts = item_requests(task, fmt, fewshot)
        text = [[[r.prefix, r.prompt, list(r.continuations)] for r in p.requests] + [p.option_chars] for p in prompts]
        # a rule other than argmax changes the stored items' correctness (argmax: the key as it always was)
        return cls(task, prompts, content_hash(text if task.scoring == "argmax" else [text, task.scoring]))


class LazyBackend:
    """``spec``'s backend, loaded on the first call (nothing loads when every pass is cached); ``close`` frees it."""

    def __init__(self, spec: ModelSpec, options: LoadOptions) -> None:
        self.spec = spec
        self.options = options
        self.loaded: Backend | None = None

    def __call__(self) -> Backend:
        if self.loaded is None:
            self.loaded = load_backend(self.spec, self.options)
        return self.loaded

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


class ModelRunner:
    def __init__(self, settings: Settings, display: Display, use_cache: bool, cache_dir: Path) -> None:
        self.settings = settings
        self.display = display
        self.use_cache = use_cache
        self.scorer = TeacherScorer(settings, display, cache_dir, use_cache=use_cache)
        self.store = self.scorer.store
        self.generations = GenerationStore(cache_dir / "generations")
        self.options = LoadOptions(device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
        self.notes = self.scorer.notes  # the scorer's, and those record adds

    def run_model(
        self,
        spec: ModelSpec,
        role: str,
        tasks: list[TaskWork],
        baseline: dict[str, PassResult] | None,
        free: Sequence[FreeTask] = (),
    ) -> tuple[ModelEntry, dict[str, PassResult]]:
        weights = fingerprint(spec)
        entry = ModelEntry(spec=spec.label(), role=role, fingerprint=weights)
        backend = self.lazy(spec)
        results: dict[str, PassResult] = {}
        try:
            for work in tasks:
                ref = baseline[work.task.name] if baseline else None
                results[work.task.name], entry.reused[work.task.name] = self.mc_pass(
                    work, spec, role, weights, backend, ref
                )
            for task in free:
                ref = baseline[task.name] if baseline else None
                results[task.name], entry.reused[task.name] = self.free_pass(task, spec, role, weights, backend, ref)
            for name, result in results.items():
                self.record(entry, spec, name, result)
        finally:
            backend.close()
        return entry, results

    def lazy(self, spec: ModelSpec) -> LazyBackend:
        return LazyBackend(spec, self.options)

    def mc_pass(
        self,
        work: TaskWork,
        spec: ModelSpec,
        role: str,
        weights: str,
        backend: Callable[[], Backend],
        ref: PassResult | None,
    ) -> tuple[PassResult, bool]:
        key = self.scorer.pass_key(weights, work.digest, ref)
        return self.scorer.score(
            work.task, work.prompts, key, spec, backend, ref, f"{role} {spec.label()} · {work.task.name}"
        )

    def free_pass(
        self,
        task: FreeTask,
        spec: ModelSpec,
        role: str,
        weights: str,
        backend: Callable[[], Backend],
        ref: PassResult | None,
    ) -> tuple[PassResult, bool]:
        """Generate (stored, resumable), then score the baseline's answers teacher-forced."""
        task = task.for_role(role)
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

    def draw(self, spec: ModelSpec, label: str, task: FreeTask, seeds: Sequence[int]) -> list[list[Generation]]:
        """``task`` sampled once per seed: each draw a stored, resumable generation pass (a draw the comparison
        itself made is read back from the cache)."""
        weights = fingerprint(spec)
        backend = self.lazy(spec)
        out = []
        try:
            for seed in seeds:
                drawn = task.with_seed(seed)
                key = generation_key(drawn, weights, self.scorer.engine())
                title = f"{label} {spec.label()} · {task.name} (seed {seed})"
                with self.display.progress(title, len(task.prompts)) as advance:
                    made, _ = generate_pass(drawn, key, backend, self.generations, use_cache=self.use_cache,
                                            advance=advance)  # fmt: skip
                out.append(made)
        finally:
            backend.close()
        return out

    def record(self, entry: ModelEntry, spec: ModelSpec, task: str, result: PassResult) -> None:
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
