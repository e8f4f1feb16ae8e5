"""Anytime-valid confidence sequences for a proportion (a flip rate), for decisions taken while items arrive.

A fixed-n interval (Wilson) covers the true rate with probability 1 − α only at an n chosen before the data. A
run that looks after every chunk and stops once the interval clears a budget is *optional stopping*: re-checked at
each look, the Wilson interval's error rate grows with the number of looks (``tests/test_sequential.py`` shows it).

A confidence sequence is a family of intervals, one per n, valid simultaneously:
P(∃ n ≥ 1: p ∉ CS_n) ≤ α, so a run may look as often as it likes and stop on any rule, and the interval it stops
on still covers at 1 − α. The one here is Robbins' beta-binomial mixture (Robbins 1970; Howard, Ramdas, McAuliffe
& Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2)): against a
candidate rate p, with s successes in n Bernoulli(p) trials, the likelihood ratio mixed over a Beta(a, b) prior,

    M_n(p) = B(a + s, b + n − s) / B(a, b) / (p^s (1 − p)^(n − s)),

is a nonnegative martingale with M_0 = 1 when the true rate is p, so by Ville's inequality
P(∃ n: M_n(p) ≥ 1/α) ≤ α, and CS_n = {p : M_n(p) < 1/α} is an interval around s/n (log M_n is convex in p and
below 0 at s/n). The guarantee holds for independent trials with one rate — items drawn at random from a task's
distribution of items; for the items of one finite task taken in a seeded random order it is conservative
(sampling without replacement only concentrates faster). The price is width: at every n the interval is wider
than Wilson's on the same counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

#: Beta(a, b) prior of the mixture: Jeffreys' (1/2, 1/2) puts weight near 0 and 1, where flip rates of good
#: candidates sit; any fixed prior gives a valid sequence, the prior only moves where it is tightest.
PRIOR = (0.5, 0.5)


def log_mixture(p: float, successes: Any, n: Any, prior: tuple[float, float] = PRIOR) -> Any:
    """log M_n(p): the log of the beta-binomial mixture martingale against rate ``p`` (0 < p < 1).
    ``successes``, ``n``: ints or arrays of one shape (one value per stream)."""
    a, b = prior
    s, t = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    loglik = s * math.log(p) + (t - s) * math.log1p(-p)  # 0 < p < 1: no 0·log 0
    return _betaln(a + s, b + t - s) - _betaln(np.asarray(a), np.asarray(b)) - loglik


_lgamma = np.vectorize(math.lgamma, otypes=[float])


def _betaln(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log B(x, y), elementwise."""
    return _lgamma(x) + _lgamma(y) - _lgamma(x + y)


def _root(f: Any, lo: float, hi: float) -> float:
    """The root of ``f`` in [lo, hi] (signs differ at the ends), by bisection to 1e-12."""
    low_negative = f(lo) < 0
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        if (f(mid) < 0) == low_negative:  # the sign at lo never changes: only which end moves
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def excludes(p: float, successes: Any, n: Any, alpha: float) -> Any:
    """Whether the confidence sequence after ``successes`` of ``n`` excludes rate ``p`` (M_n(p) ≥ 1/α); arrays in,
    booleans out — the test a sequential decision makes at each look."""
    return log_mixture(p, successes, n) >= math.log(1 / alpha)


def confidence_sequence(
    successes: int, n: int, alpha: float, prior: tuple[float, float] = PRIOR
) -> tuple[float, float]:
    """The interval {p : M_n(p) < 1/α} after ``successes`` of ``n`` trials: valid at every n simultaneously."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return 0.0, 1.0
    level = math.log(1 / alpha)

    def excess(p: float) -> float:
        return float(log_mixture(p, successes, n, prior)) - level

    centre = min(max(successes / n, 1e-12), 1 - 1e-12)  # excess < 0 here: the mixture never beats the MLE
    low = 0.0 if successes == 0 or excess(1e-15) < 0 else _root(excess, 1e-15, centre)
    high = 1.0 if successes == n or excess(1 - 1e-15) < 0 else _root(excess, centre, 1 - 1e-15)
    return low, high


class Decision(StrEnum):
    BELOW = "below"  # the rate is below the budget
    ABOVE = "above"  # above the budget, or above the noise floor
    WITHIN_FLOOR = "within floor"  # no higher than the highest noise-floor rate still plausible
    PRECISE = "precise"  # no budget asked: the interval is as narrow as asked
    UNDECIDED = "undecided"  # the items ran out first


@dataclass(frozen=True, kw_only=True)
class Question:
    """What a sequential run asks of each rate, at level ``alpha``: below or above ``budget``; above the noise
    floor, given the floor's own upper bound ``floor_high`` (from its confidence sequence); or, with neither, an
    interval of half-width at most ``precision``. All are proportions."""

    alpha: float
    budget: float | None = None
    floor_high: float | None = None
    precision: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if (self.budget is None) + (self.floor_high is None) + (self.precision is None) != 2:
            raise ValueError("ask one question: a budget, a noise floor or a precision")

    def describe(self) -> str:
        if self.budget is not None:
            return f"flip rate below {self.budget:.2%}?"
        if self.floor_high is not None:
            return f"flip rate above the noise floor (its upper bound {self.floor_high:.2%})?"
        return f"flip rate to ± {self.precision:.2%}"


@dataclass(frozen=True, kw_only=True)
class SequentialPlan:
    """``compare --sequential``: items of each task in a seeded random order, ``chunk`` at a time, each candidate
    stopping on a task once its question is decided: its flip rate below or above ``flip_budget`` %; with a noise
    floor, above the floor or within it; else known to ± ``precision`` points (also the noise floor's own stop).
    ``alpha``: the chance that one (candidate, task) decision is wrong, over all its looks; with a noise floor it is
    split in two, α/2 for the floor's interval and α/2 for the candidate's."""

    flip_budget: float | None = None  # percent
    precision: float = 2.0  # points of half-width
    alpha: float = 0.05
    chunk: int = 50  # items between looks

    def check(self) -> None:
        """Raise ValueError naming the bad setting."""
        if self.flip_budget is not None and not 0 < self.flip_budget < 100:
            raise ValueError(f"the flip budget is a percentage in (0, 100), got {self.flip_budget}")
        if not 0 < self.precision < 50:
            raise ValueError(f"the precision is a half-width in points, in (0, 50), got {self.precision}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.chunk < 1:
            raise ValueError(f"a chunk holds at least 1 item, got {self.chunk}")

    def question(self, *, floor_high: float | None = None, floor_run: bool = False) -> Question:
        """The question a candidate is asked (``floor_high``: the noise floor's upper bound on this task, in a run
        with a floor), or the floor itself (``floor_run``)."""
        if floor_run:
            return Question(alpha=self.alpha / 2, precision=self.precision / 100)
        if floor_high is not None:
            return Question(alpha=self.alpha / 2, floor_high=floor_high)
        if self.flip_budget is not None:
            return Question(alpha=self.alpha, budget=self.flip_budget / 100)
        return Question(alpha=self.alpha, precision=self.precision / 100)


@dataclass(frozen=True)
class SequentialState:
    """Where one candidate's question stands after ``n`` items: its interval and what it decides."""

    successes: int
    n: int
    interval: tuple[float, float]
    decision: Decision


def decide(successes: int, n: int, question: Question) -> SequentialState:
    """What the confidence sequence after ``successes`` of ``n`` says to ``question``: a budget is decided once the
    sequence excludes it; the floor, once the sequence lies above the floor's upper bound ("above"), or no higher
    than it ("within floor": the rate is at most the highest floor rate the floor's own sequence allows); a
    precision, once the half-width is at most it. Valid at whatever look a run stops (Ville's inequality)."""
    low, high = confidence_sequence(successes, n, question.alpha)
    decision = Decision.UNDECIDED
    if question.budget is not None:
        decision = Decision.BELOW if high < question.budget else Decision.ABOVE if low > question.budget else decision
    elif question.floor_high is not None:
        floor = question.floor_high
        decision = Decision.ABOVE if low > floor else Decision.WITHIN_FLOOR if high <= floor else decision
    elif question.precision is not None and (high - low) / 2 <= question.precision:
        decision = Decision.PRECISE
    return SequentialState(successes, n, (low, high), decision)
