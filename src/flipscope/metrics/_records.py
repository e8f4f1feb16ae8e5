"""Per-item results of one model, and the pairs that every paired metric reads."""

from __future__ import annotations

from dataclasses import dataclass


def first_argmax(values: tuple[float, ...]) -> int:
    """Index of the largest value; ties go to the first (lm-eval's and numpy's convention)."""
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


@dataclass(frozen=True)
class ItemScore:
    """One model's answer to one item: the summed log-likelihood of each option.

    ``option_chars`` (length of each option's text) gives ``acc_norm``; ``token_kl`` is the mean answer-token
    KL(baseline‖this model) over the item's options, present on candidates whose vocabulary matches.
    """

    task: str
    item_id: str
    subject: str
    target: int
    logprobs: tuple[float, ...]
    option_chars: tuple[int, ...] = ()
    token_kl: float | None = None

    @property
    def choice(self) -> int:
        return first_argmax(self.logprobs)

    @property
    def correct(self) -> bool:
        return self.choice == self.target

    @property
    def choice_norm(self) -> int:
        if not self.option_chars:
            return self.choice
        return first_argmax(tuple(lp / max(n, 1) for lp, n in zip(self.logprobs, self.option_chars, strict=True)))

    @property
    def correct_norm(self) -> bool:
        return self.choice_norm == self.target


@dataclass(frozen=True)
class Pair:
    baseline: ItemScore
    candidate: ItemScore


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
