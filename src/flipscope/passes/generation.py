"""Free-form tasks in ``compare`` (GSM8K): each model generates once (stored, resumable); every model then scores
the *baseline's* answers teacher-forced (the baseline its own, recording its rows compactly as ``kld`` does; each
candidate measured against them), which gives the judge-free distances without a judge. Generating and scoring
are separate passes with their own cache keys: re-grading stored answers needs no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.metrics import FreeAnswer, ItemScore
from flipscope.models import Backend
from flipscope.models.base import Decoding, Generation, GenRequest
from flipscope.plumbing.cache import content_hash
from flipscope.store import PassResult
from flipscope.store.generations import GenerationStore
from flipscope.tasks import ItemRequests, MCItem, ScoreRequest, TaskData, free_form_task
from flipscope.tasks.free import Graded, Problem

#: Bumped whenever generation or teacher-forced scoring changes what a stored pass would hold.
GEN_VERSION = 1
#: Bumped whenever the teacher-forced requests change (2: the exemplars sent as the requests' shared prefix).
TEACHER_VERSION = 2


@dataclass(frozen=True)
class FreeTask:
    """``prompts``: each item's whole context; ``prefix``: the part every prompt starts with (the few-shot
    exemplars), computed once, which teacher-forced requests hand to the backend as their shared ``prefix``;
    ``samples``: K > 0 when ``compare --samples K`` samples the task (``decoding`` then has a temperature, and the
    candidates' answers use the seeds after the baseline's K: ``metrics.sampling``)."""

    name: str
    problems: list[Problem]
    prompts: list[str]
    decoding: Decoding
    grade: Callable[[str, str], Graded]  # (generated text, target) → the graded answer
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""
    samples: int = 0

    @property
    def digest(self) -> str:
        return content_hash({"prompts": self.prompts, "decoding": self.decoding.__dict__})

    def with_seed(self, seed: int) -> FreeTask:
        return replace(self, decoding=replace(self.decoding, seed=seed))

    def for_role(self, role: str) -> FreeTask:
        """The task as ``role`` generates it: sampled, every model but the baseline draws with the seeds after the
        baseline's K (so a candidate, like the baseline's second draw, is compared with other random numbers)."""
        return self.with_seed(self.decoding.seed + self.samples) if self.samples and role != "baseline" else self


def load_free_task(
    name: str,
    *,
    limit: int | None,
    seed: int,
    max_new_tokens: int | None = None,
    fewshot: int | None = None,
    sampling: Sampling | None = None,
) -> FreeTask:
    """The free-form task ``name`` (``tasks.FREE_FORM``; gsm8k: as lm-eval's gsm8k_cot prompts it), generated with
    its own stop strings and at most ``max_new_tokens`` (default: the task's); greedy, or ``sampling``'s draws at
    its temperature (default: the task's) from seed ``sampling.seed``."""
    form = free_form_task(name)
    loaded = form.load(limit=limit, seed=seed, fewshot=fewshot)
    decoding = Decoding(max_new_tokens=max_new_tokens or form.max_new_tokens, stop=form.stop)
    samples = 0
    if sampling is not None:
        temperature = form.sample_temperature if sampling.temperature is None else sampling.temperature
        decoding, samples = replace(decoding, temperature=temperature, seed=sampling.seed), sampling.samples
    return FreeTask(name, loaded.problems, loaded.prompts, decoding, form.grade, loaded.meta, loaded.prefix, samples)


@dataclass(frozen=True)
class Sampling:
    """``compare --samples K [--temperature T]``: K seeded draws per item and model (``metrics.sampling``);
    ``temperature`` None: each task's own; ``seed``: the baseline's first draw's."""

    samples: int
    temperature: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise FlipscopeError(f"--samples {self.samples}: give 1 or more draws per item", fix="e.g. --samples 4")
        if self.temperature is not None and not 0 < self.temperature <= 2:
            raise FlipscopeError(f"--temperature {self.temperature}: sampling needs a temperature in (0, 2]",
                                 fix="e.g. --temperature 0.2 (lm-eval's humaneval_64), or leave out --samples "
                                 "for greedy answers")  # fmt: skip

    def seeds(self, side: str) -> list[int]:
        """Each side's seeds: the baseline's "first" draws s…s+K−1, the "second" side's and the candidates' the
        next K."""
        start = self.seed if side == "first" else self.seed + self.samples
        return list(range(start, start + self.samples))


def generation_key(task: FreeTask, weights: str, settings: dict[str, Any]) -> str:
    # sampled draws: each item seeded on its own (``Decoding.request_seed``), not one stream per call
    seeding = {"seeding": "per-item"} if task.decoding.temperature > 0 else {}
    return content_hash({"v": GEN_VERSION, "kind": "generate", "model": weights, "task": task.digest, **settings,
                         **seeding})  # fmt: skip


def generate_pass(
    task: FreeTask,
    key: str,
    backend: Callable[[], Backend],
    store: GenerationStore,
    *,
    use_cache: bool,
    advance: Callable[[int], None] | None,
) -> tuple[list[Generation], bool]:
    """Every answer (and whether all were stored): stored chunks are reused, the rest generated and stored; the
    progress bar counts the reused ones too."""
    made = 0

    def run(indices: Sequence[int]) -> list[Generation]:
        nonlocal made
        made += len(indices)
        asked = [GenRequest(task.prompts[i], seed=task.decoding.request_seed(i)) for i in indices]
        return backend().generate(asked, task.decoding, advance=advance)

    out = store.run(key, len(task.prompts), run, use_cache=use_cache)
    if advance is not None and len(task.prompts) > made:
        advance(len(task.prompts) - made)
    return out


def teacher_requests(task: FreeTask, answers: list[str]) -> tuple[TaskData, list[ItemRequests]]:
    """The baseline's non-empty answers as one-option requests after their prompts (empty ones cannot be scored
    and are left out: their items get no judge-free numbers)."""
    keep = [i for i, text in enumerate(answers) if text.strip()]
    items = [MCItem(task.problems[i].item_id, "", (answers[i],), 0) for i in keep]
    cut = len(task.prefix)  # the shared exemplars: the request's prefix, run once by backends that cache it
    prompts = [ItemRequests((ScoreRequest(task.prefix, task.prompts[i][cut:], (answers[i],)),), ()) for i in keep]
    return TaskData(f"{task.name}:teacher", items, {}, {}), prompts


def free_answer(g: Generation, teacher: ItemScore | None, graded: Graded) -> FreeAnswer:
    """A generated answer as a record, with this model's teacher-forced numbers on the baseline's answer."""
    return FreeAnswer(
        text=g.text,
        answer=graded.answer,
        correct=graded.correct,
        correct_strict=graded.correct_strict,
        found=graded.found,
        stop_reason=g.stop_reason.value,
        new_tokens=g.new_tokens,
        token_ids=g.token_ids,
        ref_logprob=teacher.logprobs[0] if teacher is not None and teacher.logprobs else None,
        ref_tokens=teacher.option_tokens[0] if teacher is not None and teacher.option_tokens else None,
    )


def free_scores(task: FreeTask, made: list[Generation], teacher: PassResult) -> list[ItemScore]:
    """This model's graded answers, with its teacher-forced numbers on the baseline's answers."""
    scored = {s.item_id: s for s in teacher.scores}
    out = []
    for problem, g in zip(task.problems, made, strict=True):
        t = scored.get(problem.item_id)
        graded = task.grade(g.text, problem.target)
        free = free_answer(g, t, graded)
        out.append(ItemScore(task.name, problem.item_id, "", 0, (), (), t.token_kl if t else None, free))
    return out


def teacher_key(weights: str, answers: list[str], settings: dict[str, Any]) -> str:
    return content_hash({"v": GEN_VERSION, "kind": "teacher", "requests": TEACHER_VERSION, "model": weights,
                         "answers": answers, **settings})  # fmt: skip
