"""Judgements as typed records, and their summaries (pure functions, recomputed from a stored run).

Pairwise, as FastChat plays a pair: each question and turn is judged twice, the candidate's answer shown second
(``first`` order) and then first (``second`` order); the two verdicts are mapped back to models, and a pair whose
verdict changes with the order counts as a tie. A pair with an unparseable verdict is counted apart and left out
of the win rate. Win rate = (wins + ½ ties) / (wins + ties + losses), from the candidate's side."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from flipscope.judge.verdict import Winner


class Outcome(StrEnum):
    WIN = "win"  # the candidate's answer judged better
    TIE = "tie"
    LOSS = "loss"
    INVALID = "invalid"  # an unparseable verdict in either order


@dataclass(frozen=True)
class Grade:
    judge: str
    model: str
    question_id: int
    category: str
    turn: int
    prompt: str  # the judge prompt's name
    raw: str
    score: float | None  # None: unparseable


@dataclass(frozen=True)
class PairJudgement:
    judge: str
    candidate: str
    question_id: int
    category: str
    turn: int
    prompt: str
    raw_first: str  # baseline shown as A, candidate as B
    raw_second: str  # candidate shown as A, baseline as B
    first: Winner | None
    second: Winner | None

    @property
    def consistent(self) -> bool | None:
        """Whether the verdict survives the swap (None where a verdict is unparseable)."""
        if self.first is None or self.second is None:
            return None
        return _side(self.first, swapped=False) == _side(self.second, swapped=True)

    @property
    def outcome(self) -> Outcome:
        return pair_outcome(self.first, self.second)


def _side(verdict: Winner, *, swapped: bool) -> str:
    if verdict is Winner.TIE:
        return "tie"
    return "candidate" if (verdict is Winner.B) != swapped else "baseline"


def pair_outcome(first: Winner | None, second: Winner | None) -> Outcome:
    """``first``: verdict with the baseline shown as A; ``second``: with the candidate shown as A."""
    if first is None or second is None:
        return Outcome.INVALID
    one, two = _side(first, swapped=False), _side(second, swapped=True)
    if one != two or one == "tie":
        return Outcome.TIE
    return Outcome.WIN if one == "candidate" else Outcome.LOSS


@dataclass
class GradeSummary:
    """One model's single grades: mean per turn, per category and overall, over parseable grades."""

    model: str
    overall: float | None
    turns: dict[int, float | None]
    categories: dict[str, float | None]
    graded: int
    unparseable: int


@dataclass
class PairSummary:
    candidate: str
    wins: int
    ties: int
    losses: int
    invalid: int
    inconsistent: int  # verdicts that changed with the order (counted as ties)
    win_rate: float | None
    categories: dict[str, float | None] = field(default_factory=dict)  # win rate per category


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize_grades(grades: Sequence[Grade]) -> list[GradeSummary]:
    out = []
    for model in dict.fromkeys(g.model for g in grades):
        mine = [g for g in grades if g.model == model]
        scored = [g for g in mine if g.score is not None]
        out.append(
            GradeSummary(
                model=model,
                overall=_mean([g.score for g in scored if g.score is not None]),
                turns={t: _mean([g.score for g in scored if g.turn == t and g.score is not None]) for t in (1, 2)},
                categories={
                    c: _mean([g.score for g in scored if g.category == c and g.score is not None])
                    for c in dict.fromkeys(g.category for g in mine)
                },
                graded=len(scored),
                unparseable=len(mine) - len(scored),
            )
        )
    return out


def win_rate(outcomes: Sequence[Outcome]) -> float | None:
    valid = [o for o in outcomes if o is not Outcome.INVALID]
    if not valid:
        return None
    return (sum(o is Outcome.WIN for o in valid) + 0.5 * sum(o is Outcome.TIE for o in valid)) / len(valid)


def summarize_pairs(pairs: Sequence[PairJudgement]) -> list[PairSummary]:
    out = []
    for candidate in dict.fromkeys(p.candidate for p in pairs):
        mine = [p for p in pairs if p.candidate == candidate]
        outcomes = [p.outcome for p in mine]
        out.append(
            PairSummary(
                candidate=candidate,
                wins=outcomes.count(Outcome.WIN),
                ties=outcomes.count(Outcome.TIE),
                losses=outcomes.count(Outcome.LOSS),
                invalid=outcomes.count(Outcome.INVALID),
                inconsistent=sum(p.consistent is False for p in mine),
                win_rate=win_rate(outcomes),
                categories={
                    c: win_rate([p.outcome for p in mine if p.category == c])
                    for c in dict.fromkeys(p.category for p in mine)
                },
            )
        )
    return out
