"""Multiple-choice items, the templates that turn them into text (as lm-eval's task configs do), and the scoring
requests built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PromptFormat(StrEnum):
    """How MMLU's and user files' options are scored. ``letter``: options listed, the letter " A".." D" scored
    (lm-eval's ``mmlu``). ``cloze``: each option's own text scored after "Answer:" (lm-eval's
    ``mmlu_continuation``; works for small models). The other built-in tasks have one format each, lm-eval's."""

    LETTER = "letter"
    CLOZE = "cloze"


@dataclass(frozen=True)
class MCItem:
    """One item. For a ``partial`` template (Winogrande) ``question`` is the sentence with its blank ``_`` and
    ``choices`` the words that fill it."""

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


def _own_choices(item: MCItem) -> tuple[str, ...]:
    return item.choices


def _no_header(item: MCItem) -> str:
    return ""


@dataclass(frozen=True)
class Template:
    """lm-eval's multiple-choice recipe: ``header`` (its description), ``text`` (doc_to_text), ``choices``
    (doc_to_choice, without the delimiter), ``delimiter`` (target_delimiter); few-shot examples are text +
    delimiter + the right choice, each followed by a blank line. ``partial`` (Winogrande): each option fills the
    sentence's blank to make its own context, and the rest of the sentence is the one continuation scored."""

    name: str
    text: Callable[[MCItem], str]
    choices: Callable[[MCItem], tuple[str, ...]] = _own_choices
    header: Callable[[MCItem], str] = _no_header
    delimiter: str = " "
    partial: bool = False
    #: lm-eval's acc_norm divides by each choice's length in characters; False where lm-eval reports acc only.
    norm: bool = True
    #: how an item is judged correct, ``metrics.Scoring``'s value (written out: this layer loads no numpy):
    #: "argmax" over the options, or "greedy": the one continuation is the model's greedy decoding (LAMBADA)
    scoring: Literal["argmax", "greedy"] = "argmax"


@dataclass(frozen=True)
class ItemRequests:
    """What one item is scored with: one request, or one per option for a ``partial`` template (each with the
    same single continuation); ``option_chars``: each option's length for acc_norm (empty: acc only)."""

    requests: tuple[ScoreRequest, ...]
    option_chars: tuple[int, ...]


@dataclass
class TaskData:
    """The items a run evaluates, the few-shot examples each subject draws on, where they came from, and the
    template (None: MMLU's, in the run's --format)."""

    name: str
    items: list[MCItem]
    fewshot_pool: dict[str, list[MCItem]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    template: Template | None = None

    @property
    def scoring(self) -> Literal["argmax", "greedy"]:
        """How its items are judged correct (``Template.scoring``; MMLU's and user files' templates: argmax)."""
        return self.template.scoring if self.template is not None else "argmax"


def _subject_text(subject: str) -> str:
    return subject.replace("_", " ").strip()


def _letter_text(item: MCItem) -> str:
    lines = [item.question.strip()]
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(item.choices)]
    return "\n".join(lines) + "\nAnswer:"


def _letters(item: MCItem) -> tuple[str, ...]:
    return tuple(LETTERS[: len(item.choices)])


def _header(kind: str) -> Callable[[MCItem], str]:
    def header(item: MCItem) -> str:
        about = f" about {_subject_text(item.subject)}" if item.subject else ""
        return f"The following are {kind} (with answers){about}.\n\n"

    return header


#: MMLU's two formats (lm-eval's ``mmlu`` and ``mmlu_continuation``), also used for user files.
MMLU_TEMPLATES = {
    PromptFormat.LETTER: Template("letter", _letter_text, _letters, _header("multiple choice questions")),
    PromptFormat.CLOZE: Template(
        "cloze", lambda item: f"Question: {item.question.strip()}\nAnswer:", header=_header("questions")
    ),
}


def _blank(item: MCItem) -> int:
    return item.question.index("_")


def _partial_contexts(item: MCItem) -> tuple[str, ...]:
    return tuple(item.question[: _blank(item)] + choice for choice in item.choices)


def _partial_target(item: MCItem) -> str:
    return item.question[_blank(item) + 1 :].strip()


def _shot(item: MCItem, template: Template) -> str:
    if template.partial:
        return _partial_contexts(item)[item.answer] + template.delimiter + _partial_target(item)
    return template.text(item) + template.delimiter + template.choices(item)[item.answer]


def build_item(item: MCItem, template: Template, shots: list[MCItem]) -> ItemRequests:
    """The prefix (header + solved examples) is the same for every item of a subject: backends reuse it."""
    prefix = template.header(item) + "".join(_shot(shot, template) + "\n\n" for shot in shots)
    if template.partial:
        continuation = (template.delimiter + _partial_target(item),)
        contexts = _partial_contexts(item)
        return ItemRequests(tuple(ScoreRequest(prefix, c, continuation) for c in contexts), ())
    choices = template.choices(item)
    request = ScoreRequest(prefix, template.text(item), tuple(template.delimiter + c for c in choices))
    return ItemRequests((request,), tuple(len(c) for c in choices) if template.norm else ())


def build_request(item: MCItem, fmt: PromptFormat, shots: list[MCItem]) -> ScoreRequest:
    """An MMLU-style item's one request in ``fmt``."""
    return build_item(item, MMLU_TEMPLATES[fmt], shots).requests[0]


def item_requests(task: TaskData, fmt: PromptFormat, fewshot: int) -> list[ItemRequests]:
    template = task.template or MMLU_TEMPLATES[fmt]
    return [build_item(item, template, task.fewshot_pool.get(item.subject, [])[:fewshot]) for item in task.items]


def build_requests(task: TaskData, fmt: PromptFormat, fewshot: int) -> list[ScoreRequest]:
    """Every request of a task, in item order (a ``partial`` item gives one per option)."""
    return [r for item in item_requests(task, fmt, fewshot) for r in item.requests]
