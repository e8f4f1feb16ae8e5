"""What a free-form task (generated, then graded) is: its items and their prompts, where generation stops, and how
an answer is graded. ``tasks.FREE_FORM`` names them (a new task is one entry there); ``passes.generation`` runs
them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Problem:
    item_id: str
    question: str
    target: str  # the gold final answer, as the data set writes it
    subject: str = ""  # (none: --limit samples uniformly)


@dataclass(frozen=True)
class FreePrompts:
    """A free-form task as loaded: the items evaluated, each one's whole prompt, the part every prompt starts with
    (the few-shot exemplars; backends may run it once), and what run.json records about the task."""

    problems: list[Problem]
    prompts: list[str]
    prefix: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Graded:
    """A generated answer graded: the final answer found (normalised; ``[invalid]`` where none), whether it is
    right under the task's lenient and strict rules, and ``found``: whether the right answer is written anywhere
    in the text (every number, box or stated answer compared with the target; None where the task has no such
    search), which gives *found but not committed*."""

    answer: str
    correct: bool
    correct_strict: bool
    found: bool | None = None


class LoadPrompts(Protocol):
    def __call__(self, *, limit: int | None, seed: int, fewshot: int | None) -> FreePrompts: ...


@dataclass(frozen=True)
class FreeFormTask:
    """One free-form task: ``load`` its items and prompts (``fewshot`` None: its standard count), ``check_fewshot``
    (the exemplars it would show, or the error a count it cannot show gives), ``grade`` a generated text against an
    item's target, and the decoding it is generated with by default."""

    description: str
    load: LoadPrompts
    check_fewshot: Callable[[int | None], int]
    grade: Callable[[str, str], Graded]
    stop: tuple[str, ...]
    max_new_tokens: int
    #: ``compare --samples``' temperature unless ``--temperature`` is given: lm-eval's sampled variants' (0.2 in
    #: humaneval_64 and gsm8k_cot_self_consistency)
    sample_temperature: float = 0.2
