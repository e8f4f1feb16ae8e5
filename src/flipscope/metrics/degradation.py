"""How a free-form answer degrades before it flips: loops, truncation, empty answers, length blow-up, and (maths)
the right answer written mid-text but not committed to.

Per item, ``degradation`` turns one model's answer into a ``Degradation`` record stored beside the answer; per
task, ``summarize_degradation`` compares the baseline's records with the candidate's, item by item.

A *loop* (``loop``) is the longest suffix of the answer that is periodic with some period p, 1 ≤ p ≤ ``max_period``
— every unit equals the one p places after it, ``s[i] == s[i + p]`` for every i in the suffix with i + p < n — that
covers at least ``min_repeats`` full cycles (span ≥ min_repeats · p) and at least ``min_span`` units. Its period is
the smallest p that gives that longest suffix. The span need not be a whole number of cycles: generation stopped
mid-cycle still counts (3.5 cycles), and the suffix reaches back as far as the periodicity holds, so a preamble
before it is left out. Units are token ids, or words (``text_loop``: split on whitespace).

Counts and estimates: a name ending in ``_count`` or ``n_items`` is a count of items; ``_share``, ``geometric_mean``,
``median`` are estimates over the task's items; ``_ci`` are 95% confidence intervals with items as the independent
units; ``mcnemar_p`` is a p-value (``paired.mcnemar_exact``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from flipscope.metrics.paired import mcnemar_exact
from flipscope.metrics.records import FreeAnswer
from flipscope.metrics.student_t import t_quantile

# Loop thresholds. Degenerate loops of compressed models run on, usually to the token limit (256+ tokens), so a
# floor well under that loses none of them; legitimate repetition is short: "no no no", "ha ha ha ha", a markdown
# table's rule "| --- | --- | --- |", three identical list items "- Yes - Yes - Yes" all stay under 32 units.
# Counting lists ("1, 2, 3, 4, 5") and enumerations ("1. … 2. … 3. …") never repeat exactly, so they are no loop
# whatever the thresholds.
#: Full cycles a loop must cover: two copies of a sentence can be a deliberate restatement, three rarely are.
MIN_REPEATS = 3
#: Units a loop must cover (tokens or words): above legitimate short repetition, far below a runaway loop.
MIN_SPAN = 32
#: Longest cycle looked for, in units: a repeated paragraph or solution step (~50–200 tokens) is still caught; the
#: cost is O(n · max_period) vectorised comparisons (4,000 tokens × 256 ≈ 1M, a few ms).
MAX_PERIOD = 256
#: Level of every confidence interval here.
LEVEL = 0.95


@dataclass(frozen=True)
class Loop:
    """The answer's looping tail: ``units[start:]``, ``span`` units periodic with ``period`` (units: tokens or
    words), out of ``length`` units in the whole answer."""

    period: int
    start: int
    span: int
    length: int

    @property
    def repeats(self) -> float:
        """Cycles the loop covers, fractional where generation stopped mid-cycle (e.g. 3.5)."""
        return self.span / self.period

    @property
    def share(self) -> float:
        """Share of the answer's units inside the loop, in (0, 1]."""
        return self.span / self.length


def _codes(units: Sequence[Hashable]) -> np.ndarray:
    """Each unit as a small integer, equal units the same. [n] → int64 [n]."""
    ids: dict[Hashable, int] = {}
    return np.fromiter((ids.setdefault(u, len(ids)) for u in units), dtype=np.int64, count=len(units))


def _periodic_suffix(codes: np.ndarray, period: int) -> int:
    """Length of the longest suffix of ``codes`` ([n], n > period) that is periodic with ``period``."""
    n = len(codes)
    if codes[-1] != codes[-1 - period]:  # the common case, no array work
        return period
    differs = codes[period:] != codes[:-period]  # [n − p]: differs[i] ⇔ s[i] ≠ s[i + p]
    if not differs.any():
        return n
    last_mismatch = len(differs) - 1 - int(np.argmax(differs[::-1]))
    return n - last_mismatch - 1


def loop(
    units: Sequence[Hashable],
    *,
    min_repeats: int = MIN_REPEATS,
    max_period: int = MAX_PERIOD,
    min_span: int = MIN_SPAN,
) -> Loop | None:
    """The answer's loop (module docstring: the longest periodic suffix with period ≤ ``max_period`` covering at
    least ``min_repeats`` cycles and ``min_span`` units; its smallest such period); None where there is none.
    O(n · max_period) time."""
    if min_repeats < 2 or max_period < 1 or min_span < 1:
        got = f"min_repeats={min_repeats}, max_period={max_period}, min_span={min_span}"
        raise ValueError(f"loop: need min_repeats ≥ 2, max_period ≥ 1, min_span ≥ 1; got {got}")
    n = len(units)
    codes = _codes(units)
    best_span, best_period = 0, 0
    for period in range(1, min(max_period, n // min_repeats) + 1):
        span = _periodic_suffix(codes, period)
        if span > best_span and span >= min_repeats * period and span >= min_span:
            best_span, best_period = span, period  # strictly longer only: ties keep the smaller period
            if span == n:
                break
    return Loop(best_period, n - best_span, best_span, n) if best_span else None


def text_loop(
    text: str, *, min_repeats: int = MIN_REPEATS, max_period: int = MAX_PERIOD, min_span: int = MIN_SPAN
) -> Loop | None:
    """``loop`` over the text's words (split on whitespace, so spacing and line breaks do not matter)."""
    return loop(text.split(), min_repeats=min_repeats, max_period=max_period, min_span=min_span)


def found_not_committed(*, found: bool | None, correct: bool) -> bool | None:
    """True where the committed answer was graded wrong yet the right answer is written somewhere in the text
    (``found``: the task's own search, e.g. every \\boxed{…} and "The final answer is …" of a maths answer
    compared with the gold); None where the task has no such search. A True item is always a wrong one."""
    if found is None:
        return None
    return found and not correct


def length_ratio(tokens: int | None, baseline_tokens: int | None) -> float | None:
    """Candidate tokens / baseline tokens on one item; None where the baseline's answer is empty or either count
    is unknown. 0.0 for an empty candidate answer."""
    if tokens is None or baseline_tokens is None or baseline_tokens <= 0:
        return None
    return tokens / baseline_tokens


@dataclass(frozen=True)
class Degradation:
    """One model's free-form answer on one item: how it degraded (stored beside the answer).

    ``length_ratio``: its tokens / the baseline's on the item (1.0 for the baseline itself; None: see
    ``length_ratio``); ``truncated``: generation stopped at the token limit; ``empty``: nothing but whitespace;
    ``looped``: the answer ends in a loop (``loop``), ``loop_period`` its cycle and ``loop_share`` the share of the
    answer it covers, in tokens where the ids were given, else in words (None without a loop);
    ``found_not_committed``: see ``found_not_committed`` (None: the task has no such test)."""

    length_ratio: float | None
    truncated: bool
    empty: bool
    looped: bool
    loop_period: int | None
    loop_share: float | None
    found_not_committed: bool | None


def degradation(
    text: str,
    *,
    tokens: int | None,
    baseline_tokens: int | None,
    hit_limit: bool,
    correct: bool,
    found: bool | None = None,
    token_ids: Sequence[int] | None = None,
) -> Degradation:
    """One answer's ``Degradation``: ``text`` and its ``tokens`` (count), the baseline's token count on the same
    item, ``hit_limit`` (the finish reason was "length"), ``correct`` (the task's grade), ``found`` (the right
    answer appears in the text: maths tasks; None elsewhere), ``token_ids`` (the answer's tokens, for the loop test;
    without them it runs on words)."""
    cycle = loop(token_ids) if token_ids is not None else text_loop(text)
    return Degradation(
        length_ratio=length_ratio(tokens, baseline_tokens),
        truncated=hit_limit,
        empty=not text.strip(),
        looped=cycle is not None,
        loop_period=cycle.period if cycle else None,
        loop_share=cycle.share if cycle else None,
        found_not_committed=found_not_committed(found=found, correct=correct),
    )


@dataclass(frozen=True)
class FlagChange:
    """One failure flag over a task's paired items (those where both sides have it): how many show it on each side
    (counts), how many gained it (baseline no → candidate yes) and lost it (yes → no)."""

    n_items: int
    baseline_count: int
    candidate_count: int
    gained_count: int
    lost_count: int

    @property
    def baseline_share(self) -> float | None:
        return self.baseline_count / self.n_items if self.n_items else None

    @property
    def candidate_share(self) -> float | None:
        return self.candidate_count / self.n_items if self.n_items else None

    @property
    def change(self) -> float | None:
        """Candidate share − baseline share = (gained − lost) / n_items (an estimate)."""
        return (self.gained_count - self.lost_count) / self.n_items if self.n_items else None

    @property
    def mcnemar_p(self) -> float:
        """Exact two-sided McNemar p-value on gained vs lost: is the change real?"""
        return mcnemar_exact(self.gained_count, self.lost_count)


def flag_change(pairs: Sequence[tuple[bool | None, bool | None]]) -> FlagChange:
    """Counts of one flag over (baseline, candidate) values, one pair per item; pairs with a None side are left
    out."""
    known = [(b, c) for b, c in pairs if b is not None and c is not None]
    return FlagChange(
        n_items=len(known),
        baseline_count=sum(1 for b, _ in known if b),
        candidate_count=sum(1 for _, c in known if c),
        gained_count=sum(1 for b, c in known if not b and c),
        lost_count=sum(1 for b, c in known if b and not c),
    )


@dataclass(frozen=True)
class LengthRatios:
    """Candidate / baseline token counts over a task's items with both counts > 0 (``n_items``; ``n_left_out``:
    items with an empty or unknown side — an empty candidate answer is counted by the ``empty`` flag instead).

    ``geometric_mean``: exp(mean log ratio), its ``_ci`` a t-interval on the log-ratios (Student's t, n − 1 degrees
    of freedom, items independent) mapped back by exp — None under 2 items. ``median`` (linear interpolation), its
    ``_ci`` the distribution-free order-statistic interval [x₍ⱼ₎, x₍ₙ₊₁₋ⱼ₎] with binomial(n, ½) coverage ≥ 95% —
    None under 6 items, where not even [min, max] reaches it."""

    n_items: int
    n_left_out: int
    geometric_mean: float
    geometric_mean_ci: tuple[float, float] | None
    median: float
    median_ci: tuple[float, float] | None


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float] | None:
    """Student-t interval on the mean of ``values`` ([n]); None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    half = t_quantile((1 + level) / 2, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    centre = float(values.mean())
    return centre - half, centre + half


def _median_ci(ordered: Sequence[float], level: float) -> tuple[float, float] | None:
    """Order-statistic interval for the median of sorted values: the innermost [x₍ⱼ₎, x₍ₙ₊₁₋ⱼ₎] (1-based) with
    P(Binomial(n, ½) < j) ≤ (1 − level) / 2 on each side; None where even j = 1 falls short."""
    n = len(ordered)
    alpha_half, below, j = (1 - level) / 2, 0.0, 0
    while j < n // 2:
        below += math.comb(n, j) / 2**n  # P(Binomial(n, ½) ≤ j)
        if below > alpha_half:
            break
        j += 1
    return (ordered[j - 1], ordered[n - j]) if j else None


def length_ratios(ratios: Sequence[float | None], *, level: float = LEVEL) -> LengthRatios | None:
    """``LengthRatios`` over per-item ratios (None and 0 left out); None where no item is left."""
    kept = sorted(r for r in ratios if r is not None and r > 0)
    if not kept:
        return None
    logs = np.log(np.asarray(kept, dtype=np.float64))  # [n]
    ci = _mean_ci(logs, level)
    return LengthRatios(
        n_items=len(kept),
        n_left_out=len(ratios) - len(kept),
        geometric_mean=math.exp(float(logs.mean())),
        geometric_mean_ci=(math.exp(ci[0]), math.exp(ci[1])) if ci else None,
        median=float(np.median(kept)),
        median_ci=_median_ci(kept, level),
    )


@dataclass(frozen=True)
class DegradationSummary:
    """A task's degradation, baseline vs candidate over paired items: one ``FlagChange`` per flag
    (``found_not_committed`` None where no item has that test) and the candidate's ``LengthRatios`` (None where no
    item has both token counts)."""

    n_items: int
    truncated: FlagChange
    looped: FlagChange
    empty: FlagChange
    found_not_committed: FlagChange | None
    length: LengthRatios | None


def summarize_degradation(pairs: Sequence[tuple[Degradation, Degradation]]) -> DegradationSummary:
    """Summary over (baseline record, candidate record) pairs, one per item."""
    found = flag_change([(b.found_not_committed, c.found_not_committed) for b, c in pairs])
    return DegradationSummary(
        n_items=len(pairs),
        truncated=flag_change([(b.truncated, c.truncated) for b, c in pairs]),
        looped=flag_change([(b.looped, c.looped) for b, c in pairs]),
        empty=flag_change([(b.empty, c.empty) for b, c in pairs]),
        found_not_committed=found if found.n_items else None,
        length=length_ratios([c.length_ratio for _, c in pairs]),
    )


def answer_degradation(answer: FreeAnswer, baseline: FreeAnswer) -> Degradation:
    """A stored free-form answer's ``Degradation`` against the baseline's answer on the same item (the baseline's
    own: a length ratio of 1). Recomputed from the records, never stored in a pass."""
    return degradation(
        answer.text,
        tokens=answer_tokens(answer, baseline),
        baseline_tokens=answer_tokens(baseline, answer) if baseline.text.strip() else None,
        hit_limit=answer.stop_reason == "length",
        correct=answer.correct,
        found=answer.found,
        token_ids=answer.token_ids,
    )


def answer_tokens(answer: FreeAnswer, other: FreeAnswer) -> int | None:
    """The answer text's length in tokens, counted as ``other``'s is (the two are divided): its own tokens where
    both store them (``new_tokens`` also counts a stop string generated and cut off, and EOS), else
    ``new_tokens``."""
    if answer.token_ids is not None and other.token_ids is not None:
        return len(answer.token_ids)
    return answer.new_tokens
