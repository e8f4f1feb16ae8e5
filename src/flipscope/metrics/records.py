"""Per-item results of one model, and the pairs that every paired metric reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


def first_argmax(values: tuple[float, ...]) -> int:
    """Index of the largest value; ties go to the first (lm-eval's and numpy's convention)."""
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


#: A free-form answer from which no final answer could be extracted (lm-eval's filter fallback).
NO_ANSWER = "[invalid]"


class Scoring(StrEnum):
    """How an option-scored item is judged correct. ``argmax``: the target has the highest summed log-likelihood
    among the options (lm-eval's ``acc`` for multiple choice). ``greedy``: every token of the target continuation is
    the model's argmax given the context and the continuation's earlier tokens, teacher-forced (lm-eval's
    ``is_greedy``, the ``acc`` of loglikelihood tasks such as LAMBADA). ``tasks.items.Template.scoring`` names it by
    value (the task layer loads no numpy)."""

    ARGMAX = "argmax"
    GREEDY = "greedy"


@dataclass(frozen=True)
class FreeAnswer:
    """A free-form answer: the generated text (cut at its stop string), the final answer extracted from it
    ("[invalid]" where none), whether that is right (and under lm-eval's strict filter), why generation stopped,
    its tokens (where the backend knows them); ``ref_logprob``: the log-likelihood this model gives the
    *baseline's* answer, teacher-forced (the baseline: its own), over ``ref_tokens`` tokens — None where the
    baseline's answer is empty or could not be scored; ``found``: the task's search for the right answer anywhere
    in the text (*found but not committed* where it is True and ``correct`` False)."""

    text: str
    answer: str
    correct: bool
    correct_strict: bool
    stop_reason: str
    new_tokens: int | None
    token_ids: tuple[int, ...] | None = None
    ref_logprob: float | None = None
    ref_tokens: int | None = None
    found: bool | None = None  # the right answer written anywhere in the text (None: the task has no such search)


@dataclass(frozen=True)
class AnswerDistance:
    """Judge-free distances from the baseline's free-form answer to a candidate's, on one item (see
    ``answer_distance``)."""

    teacher_kl: float | None
    delta_nll: float | None
    first_divergence: int | None
    identical: bool
    same_answer: bool


@dataclass(frozen=True)
class ItemScore:
    """One model's answer to one item: the summed log-likelihood of each option, or (``free``) a generated answer.

    ``option_chars`` (length of each option's text) gives ``acc_norm``; ``token_kl`` is the mean answer-token
    KL(baseline‖this model) over the item's options, present on candidates whose vocabulary matches.
    ``greedy``: per option, whether it is this model's greedy decoding (None where the backend cannot tell);
    ``scoring``: the task's rule for ``correct`` (``Scoring``; ``greedy`` is required under ``Scoring.GREEDY``).
    """

    task: str
    item_id: str
    subject: str
    target: int
    logprobs: tuple[float, ...]
    option_chars: tuple[int, ...] = ()
    token_kl: float | None = None
    free: FreeAnswer | None = None
    option_tokens: tuple[int, ...] = ()
    greedy: tuple[bool, ...] | None = None
    scoring: Scoring = Scoring.ARGMAX

    def __post_init__(self) -> None:
        object.__setattr__(self, "scoring", Scoring(self.scoring))  # its value given as text: the enum
        if self.greedy is not None and len(self.greedy) != len(self.logprobs):
            where = f"{self.task}/{self.item_id}"
            raise ValueError(f"{where}: {len(self.greedy)} greedy flags for {len(self.logprobs)} options")
        if self.scoring == Scoring.GREEDY and self.free is None and self.greedy is None:
            raise ValueError(f"{self.task}/{self.item_id}: scored by greedy match but holds no greedy flags")

    @property
    def choice(self) -> int:
        return first_argmax(self.logprobs)

    @property
    def has_choices(self) -> bool:
        """Whether a distribution over options means something here (choice KL, margins, collapse): an option-scored
        item of two options or more, judged by argmax. Not a greedy-scored item (one continuation)."""
        return self.free is None and self.scoring == Scoring.ARGMAX and len(self.logprobs) > 1

    @property
    def finite(self) -> bool:
        """False where a log-probability of this item is NaN or infinite (a model's NaN logits, a server's bad
        value): such an item is reported and left out of every metric, never averaged in."""
        values = [*self.logprobs, self.token_kl]
        if self.free is not None:
            values.append(self.free.ref_logprob)
        return all(v is None or math.isfinite(v) for v in values)

    @property
    def correct(self) -> bool:
        if self.free is not None:
            return self.free.correct
        if self.scoring == Scoring.GREEDY:
            assert self.greedy is not None  # __post_init__
            return self.greedy[self.target]
        return self.choice == self.target

    @property
    def answer_key(self) -> int | str:
        """What all-flips and same-answer compare (``same_answer``): the chosen option, or the extracted and
        normalised free-form answer ("[invalid]" where the text holds none). A greedy-scored item's answer is not
        known beyond whether it is the target, so all-flips is not reported for it (``paired.flip_counts``)."""
        return self.free.answer if self.free is not None else self.choice

    @property
    def choice_norm(self) -> int:
        if not self.option_chars or self.free is not None:
            return self.choice
        return first_argmax(tuple(lp / max(n, 1) for lp, n in zip(self.logprobs, self.option_chars, strict=True)))

    @property
    def correct_norm(self) -> bool:
        if self.free is not None or self.scoring == Scoring.GREEDY:
            return self.correct
        return self.choice_norm == self.target


@dataclass(frozen=True)
class Pair:
    baseline: ItemScore
    candidate: ItemScore


def same_answer(pair: Pair) -> bool:
    """Whether the two models gave the same answer: the same option, or the same normalised final answer. The one
    rule that all-flips (``paired.flip_counts``) and same-answer (``answer_distance``) read.

    Two "[invalid]" (neither text holds a final answer) are the same answer: the candidate did what the baseline
    did, and as neither is graded correct it is no flip either — so it is no all-flip, and it counts towards
    same-answer. The summary's invalid counts say how many such non-answers each side gave."""
    return pair.baseline.answer_key == pair.candidate.answer_key


def pair_up(baseline: list[ItemScore], candidate: list[ItemScore]) -> list[Pair]:
    """Match items by (task, item_id); raises if the two runs did not see the same items."""
    index = {(s.task, s.item_id): s for s in baseline}
    pairs = []
    for score in candidate:
        base = index.get((score.task, score.item_id))
        if base is None:
            raise ValueError(f"candidate item {score.task}/{score.item_id} has no baseline result")
        pairs.append(Pair(base, score))
    return pairs


def first_divergence(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """Index of the first token where two answers differ (the shorter one's length where one continues the
    other); None where they are the same tokens."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def answer_distance(pair: Pair) -> AnswerDistance | None:
    """Judge-free distances of a free-form pair: ``teacher_kl`` = the candidate's mean per-token KL(B‖C) over
    the baseline's answer with both models fed its tokens; ``delta_nll`` = (NLL_C − NLL_B) of that answer per
    token; ``first_divergence`` (None: the same tokens; also None where either side's tokens are unknown, then
    ``identical`` compares text); ``same_answer``: the same final answer (``same_answer``: two "[invalid]" are
    one). None for multiple choice."""
    b, c = pair.baseline.free, pair.candidate.free
    if b is None or c is None:
        return None
    nll = None
    if b.ref_logprob is not None and c.ref_logprob is not None and b.ref_tokens:
        nll = (b.ref_logprob - c.ref_logprob) / b.ref_tokens
    divergence = None
    identical = b.text == c.text
    if b.token_ids is not None and c.token_ids is not None:
        divergence = first_divergence(b.token_ids, c.token_ids)
        identical = divergence is None
    return AnswerDistance(pair.candidate.token_kl, nll, divergence, identical, same_answer(pair))
