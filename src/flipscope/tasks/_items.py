"""Multiple-choice items and the prompts built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PromptFormat(StrEnum):
    """How options are scored. ``letter``: options listed, the letter " A".." D" scored (lm-eval's ``mmlu``).
    ``cloze``: each option's own text scored after "Answer:" (works for small models)."""

    LETTER = "letter"
    CLOZE = "cloze"


@dataclass(frozen=True)
class MCItem:
    item_id: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""


@dataclass(frozen=True)
class ScoreRequest:
    """Score each continuation given ``prefix + prompt``. ``prefix`` is shared by many requests
    (task header and few-shot examples) and is computed once per distinct value by efficient backends."""

    prefix: str
    prompt: str
    continuations: tuple[str, ...]


@dataclass
class TaskData:
    """The items a run evaluates, the few-shot examples each subject draws on, and where they came from."""

    name: str
    items: list[MCItem]
    fewshot_pool: dict[str, list[MCItem]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _subject_text(subject: str) -> str:
    return subject.replace("_", " ").strip()


def _header(subject: str, fmt: PromptFormat) -> str:
    kind = "multiple choice questions" if fmt is PromptFormat.LETTER else "questions"
    about = f" about {_subject_text(subject)}" if subject else ""
    return f"The following are {kind} (with answers){about}.\n\n"


def _question_text(item: MCItem, fmt: PromptFormat) -> str:
    if fmt is PromptFormat.LETTER:
        lines = [item.question.strip()]
        lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
        return "\n".join(lines) + "\nAnswer:"
    return f"Question: {item.question.strip()}\nAnswer:"


def continuations(item: MCItem, fmt: PromptFormat) -> tuple[str, ...]:
    if fmt is PromptFormat.LETTER:
        return tuple(f" {LETTERS[i]}" for i in range(len(item.choices)))
    return tuple(f" {choice}" for choice in item.choices)


def build_request(item: MCItem, fmt: PromptFormat, shots: list[MCItem]) -> ScoreRequest:
    """The prefix (header + solved examples) is the same for every item of a subject: backends reuse it."""
    prefix = _header(item.subject, fmt)
    for shot in shots:
        prefix += _question_text(shot, fmt) + continuations(shot, fmt)[shot.answer] + "\n\n"
    return ScoreRequest(prefix=prefix, prompt=_question_text(item, fmt), continuations=continuations(item, fmt))


def build_requests(task: TaskData, fmt: PromptFormat, fewshot: int) -> list[ScoreRequest]:
    return [build_request(item, fmt, task.fewshot_pool.get(item.subject, [])[:fewshot]) for item in task.items]
