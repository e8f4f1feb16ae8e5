"""Degradation of free-form answers (``metrics.degradation``): the loop finder against a brute-force periodic-suffix
search, hand-made loops and non-loops, the per-item record, and the per-task summary's paired counts and intervals
(against scipy)."""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from flipscope.metrics.degradation import (
    MIN_SPAN,
    Degradation,
    Loop,
    answer_degradation,
    degradation,
    flag_change,
    found_not_committed,
    length_ratio,
    length_ratios,
    loop,
    summarize_degradation,
    text_loop,
)
from flipscope.metrics.paired import mcnemar_exact
from flipscope.metrics.records import FreeAnswer

FAST = settings(max_examples=300, deadline=None)


def brute_loop(
    units: Sequence[Hashable], *, min_repeats: int, max_period: int, min_span: int
) -> tuple[int, int] | None:
    """The definition written out, O(n² · max_period): the longest qualifying periodic suffix, its smallest period.
    Returns (period, span)."""
    n = len(units)
    for span in range(n, 0, -1):
        for period in range(1, max_period + 1):
            periodic = all(units[i] == units[i + period] for i in range(n - span, n - period))
            if periodic and span >= min_repeats * period and span >= min_span:
                return period, span
    return None


def as_pair(found: Loop | None) -> tuple[int, int] | None:
    return None if found is None else (found.period, found.span)


# Sequences over a tiny alphabet, often with a periodic tail (a preamble, whole cycles, a partial cycle), so that
# every branch of the finder — short and long periods, ties, partial cycles — is hit.
alphabet = st.sampled_from("abc")
tailed = st.builds(
    lambda pre, cycle, times, cut: pre + cycle * times + cycle[:cut],
    st.lists(alphabet, max_size=8),
    st.lists(alphabet, min_size=1, max_size=5),
    st.integers(0, 6),
    st.integers(0, 4),
)


@FAST
@given(
    units=tailed | st.lists(alphabet, max_size=30),
    min_repeats=st.integers(2, 4),
    max_period=st.integers(1, 8),
    min_span=st.integers(1, 12),
)
def test_loop_matches_brute_force(units: list[str], min_repeats: int, max_period: int, min_span: int) -> None:
    knobs = {"min_repeats": min_repeats, "max_period": max_period, "min_span": min_span}
    found = loop(units, **knobs)
    assert as_pair(found) == brute_loop(units, **knobs)
    if found is not None:
        assert found.start == len(units) - found.span and found.length == len(units)


def test_single_word_repeated_is_period_one() -> None:
    found = text_loop("the " * 40)
    assert found is not None and (found.period, found.repeats, found.share) == (1, 40.0, 1.0)


def test_two_unit_cycle_is_found_with_its_smallest_period() -> None:
    """The units "a b a b a b a b" are also periodic with 4 and 6: the smallest period is reported."""
    found = loop(list("abababab"), min_span=1)
    assert found is not None and (found.period, found.repeats, found.start) == (2, 4.0, 0)


def test_longer_cycle_wins_when_it_covers_more() -> None:
    """For "b a a a" × 10 a period of 1 covers only the last "a a a"; the loop is the whole text, period 4."""
    found = loop(list("baaa" * 10), min_span=1)
    assert found is not None and (found.period, found.span) == (4, 40)


#: 9 words, the last unlike the preamble's last.
CYCLE = ["and", "so", "the", "answer", "is", "the", "same", "as", "before"]


def test_loop_after_a_preamble_starts_where_the_repetition_does() -> None:
    preamble = ["First", "we", "add", "the", "two", "numbers", "to", "get", "12", "apples", "in", "total", "."]
    found = text_loop(" ".join(preamble + CYCLE * 6))
    assert found is not None
    assert (found.period, found.start, found.span) == (9, len(preamble), 54)
    assert found.share == pytest.approx(54 / (54 + len(preamble)))


def test_incomplete_last_cycle_still_counts() -> None:
    """Generation stopped mid-cycle: 5 cycles and 4 of the next 9 words."""
    found = text_loop(" ".join(CYCLE * 5 + CYCLE[:4]))
    assert found is not None and found.period == 9 and found.repeats == pytest.approx(5 + 4 / 9)


def test_min_repeats_counts_full_cycles_with_a_partial_one() -> None:
    """2.9 cycles is not 3; 3.1 is (min_span 1 so that only the repeats decide)."""
    units = list("xyzuvwabcdefghij")  # 10 distinct units per cycle: "abcdefghij"
    cycle = list("abcdefghij")
    assert loop(units[:6] + cycle * 2 + cycle[:9], min_span=1) is None
    found = loop(units[:6] + cycle * 3 + cycle[:1], min_span=1)
    assert found is not None and found.period == 10 and found.repeats == pytest.approx(3.1)


def test_counting_list_is_no_loop() -> None:
    assert text_loop(", ".join(str(i) for i in range(1, 300))) is None
    assert loop([i % 1000 for i in range(1, 300)]) is None


@pytest.mark.parametrize(
    "text",
    [
        "1. Yes\n2. Yes\n3. Yes",
        "- Yes\n- Yes\n- Yes",
        "No no no no, that is wrong.\nno no no",
        "| a | b | c |\n| --- | --- | --- |\n| 1 | 2 | 3 |",
        "ha ha ha ha ha ha",
    ],
)
def test_short_legitimate_repetition_is_no_loop(text: str) -> None:
    assert text_loop(text) is None


def test_min_span_is_what_spares_short_repetition() -> None:
    """The default floor, not luck, keeps "- Yes - Yes - Yes" out: lowered, it is a loop."""
    assert text_loop("- Yes\n- Yes\n- Yes") is None
    found = text_loop("- Yes\n- Yes\n- Yes", min_span=6)
    assert found is not None and found.period == 2


def test_loop_just_over_the_span_floor() -> None:
    assert text_loop("the " * (MIN_SPAN - 1)) is None
    assert text_loop("the " * MIN_SPAN) is not None


def test_empty_and_whitespace_have_no_loop() -> None:
    assert loop([]) is None
    assert text_loop("   \n\t ") is None


def test_cycle_longer_than_max_period_is_not_found() -> None:
    cycle = list(range(40))
    assert loop(cycle * 4, max_period=39) is None
    found = loop(cycle * 4, max_period=40)
    assert found is not None and found.period == 40


@pytest.mark.parametrize("knobs", [{"min_repeats": 1}, {"max_period": 0}, {"min_span": 0}])
def test_bad_thresholds_are_refused(knobs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="loop"):
        loop([1, 1, 1], **knobs)


def test_long_answers_are_fast() -> None:
    """O(n · max_period): the worst case is a near-constant answer (every period matches far back)."""
    worst = [7] + [1] * 3999
    looping = list(range(500)) + list(range(1000, 1023)) * 150
    start = time.perf_counter()
    found_worst, found_looping = loop(worst), loop(looping)
    assert time.perf_counter() - start < 1.0
    assert found_worst is not None and (found_worst.period, found_worst.start) == (1, 1)
    assert found_looping is not None and (found_looping.period, found_looping.start) == (23, 500)


# --- per-item record ---


@pytest.mark.parametrize(
    ("found", "correct", "expected"),
    [(True, False, True), (True, True, False), (False, False, False), (None, False, None), (None, True, None)],
)
def test_found_not_committed_is_found_and_wrong(found: bool | None, correct: bool, expected: bool | None) -> None:
    """Only a wrong answer whose text holds the right one counts; a task without the search gives None."""
    assert found_not_committed(found=found, correct=correct) is expected
    record = degradation("x", tokens=1, baseline_tokens=1, hit_limit=False, correct=correct, found=found)
    assert record.found_not_committed is expected


@pytest.mark.parametrize(
    ("tokens", "baseline", "expected"),
    [(50, 100, 0.5), (300, 100, 3.0), (0, 100, 0.0), (10, 0, None), (None, 10, None), (10, None, None)],
)
def test_length_ratio(tokens: int | None, baseline: int | None, expected: float | None) -> None:
    assert length_ratio(tokens, baseline) == expected


@pytest.mark.parametrize(("text", "empty"), [("", True), ("  \n\t", True), (" 42 ", False)])
def test_empty_and_whitespace_only_answers(text: str, empty: bool) -> None:
    record = degradation(text, tokens=len(text), baseline_tokens=5, hit_limit=False, correct=False)
    assert record.empty is empty and record.looped is False and record.loop_period is None


def test_empty_answer_with_an_empty_baseline_has_no_ratio() -> None:
    record = degradation("", tokens=0, baseline_tokens=0, hit_limit=False, correct=False, found=False)
    assert record == Degradation(None, False, True, False, None, None, False)


def test_length_ratio_counts_the_answers_own_tokens_not_the_stop_string() -> None:
    """``new_tokens`` counts the cut-off stop string ("[DONE]": 3 tokens) and EOS; the ratio is over the answers'
    own token ids, and has no value where the baseline's answer is blank."""
    base = FreeAnswer("x = 1", "", True, True, "stop", new_tokens=6, token_ids=(1, 2, 3))
    cand = FreeAnswer("x = 1\ny = 2", "", True, True, "stop", new_tokens=9, token_ids=(1, 2, 3, 4, 5, 6))
    assert answer_degradation(cand, base).length_ratio == 2.0  # not 9 / 6
    assert answer_degradation(cand, FreeAnswer("\n", "", False, False, "stop", 4, (7,))).length_ratio is None
    no_ids = FreeAnswer("x = 1\ny = 2", "", True, True, "stop", new_tokens=12)
    assert answer_degradation(no_ids, base).length_ratio == 12 / 6  # one count on both sides: new_tokens


def test_truncated_looping_answer() -> None:
    text = "Step 1: add 3 and 4.\n" + "We get 7 so we add 3 and 4 again.\n" * 12 + "We get"
    record = degradation(text, tokens=180, baseline_tokens=60, hit_limit=True, correct=False)
    assert record.truncated and record.looped and not record.empty
    assert record.length_ratio == 3.0 and record.loop_period == 10
    assert record.loop_share == pytest.approx(122 / 128)  # 6 preamble words, 12 × 10 + 2 looping


def test_loop_is_measured_in_tokens_when_ids_are_given() -> None:
    """The words of the text hold no loop; the token ids do, with their own period."""
    ids = list(range(100, 120)) + [5, 6, 7] * 20
    record = degradation("a short answer", tokens=80, baseline_tokens=80, hit_limit=False, correct=True,
                         token_ids=ids)  # fmt: skip
    assert record.looped and record.loop_period == 3 and record.loop_share == pytest.approx(60 / 80)
    assert degradation("a short answer", tokens=3, baseline_tokens=3, hit_limit=False, correct=True).looped is False


# --- per-task summary ---


def record(*, truncated: bool = False, looped: bool = False, empty: bool = False, found: bool | None = None,
           ratio: float | None = 1.0) -> Degradation:  # fmt: skip
    return Degradation(ratio, truncated, empty, looped, 3 if looped else None, 0.5 if looped else None, found)


def test_summary_paired_counts_gained_differs_from_lost() -> None:
    """Truncation: 3 items gain it, 1 loses it, 1 keeps it, 1 never has it. Loops: only gained."""
    base_flags = [False, False, False, True, True, False]
    cand_flags = [True, True, True, False, True, False]
    pairs = [
        (record(truncated=b), record(truncated=c, looped=c and not b))
        for b, c in zip(base_flags, cand_flags, strict=True)
    ]
    summary = summarize_degradation(pairs)
    t = summary.truncated
    assert (t.n_items, t.baseline_count, t.candidate_count, t.gained_count, t.lost_count) == (6, 2, 4, 3, 1)
    assert (t.baseline_share, t.candidate_share, t.change) == (2 / 6, 4 / 6, 2 / 6)
    assert t.mcnemar_p == mcnemar_exact(3, 1)
    assert (summary.looped.gained_count, summary.looped.lost_count) == (3, 0)
    assert summary.empty.candidate_count == 0 and summary.empty.mcnemar_p == 1.0
    assert summary.found_not_committed is None and summary.n_items == 6


def test_summary_mcnemar_is_significant_only_for_a_lopsided_change() -> None:
    gained = [(record(), record(looped=True))] * 10
    assert summarize_degradation(gained).looped.mcnemar_p == pytest.approx(2 / 2**10)
    balanced = gained[:5] + [(record(looped=True), record())] * 5
    assert summarize_degradation(balanced).looped.mcnemar_p == 1.0


def test_found_not_committed_counts_only_items_with_the_test() -> None:
    change = flag_change([(False, True), (None, True), (True, None), (False, False), (True, False), (False, True)])
    assert (change.n_items, change.gained_count, change.lost_count) == (4, 2, 1)
    pairs = [(record(found=b), record(found=c)) for b, c in [(False, True), (None, None), (False, False)]]
    found = summarize_degradation(pairs).found_not_committed
    assert found is not None and (found.n_items, found.candidate_count, found.candidate_share) == (2, 1, 0.5)


def test_flag_change_without_items_has_no_shares() -> None:
    change = flag_change([])
    assert (change.baseline_share, change.candidate_share, change.change, change.mcnemar_p) == (None, None, None, 1.0)


def test_length_ratios_match_scipy_and_leave_out_empty_sides() -> None:
    ratios = [0.5, 2.0, 4.0, 1.0, 3.0, 8.0, 1.5, None, 0.0]
    summary = length_ratios(ratios)
    assert summary is not None and (summary.n_items, summary.n_left_out) == (7, 2)
    logs = np.log([0.5, 2.0, 4.0, 1.0, 3.0, 8.0, 1.5])
    assert summary.geometric_mean == pytest.approx(stats.gmean([0.5, 2.0, 4.0, 1.0, 3.0, 8.0, 1.5]))
    lo, hi = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    assert summary.geometric_mean_ci == pytest.approx((math.exp(lo), math.exp(hi)))
    assert summary.median == 2.0


@pytest.mark.parametrize("n", [2, 5, 6, 7, 10, 17, 30, 101])
def test_median_interval_is_the_innermost_with_95_percent_coverage(n: int) -> None:
    """Against scipy's binomial: coverage of [x₍ⱼ₎, x₍ₙ₊₁₋ⱼ₎] is 1 − 2·P(Bin(n, ½) ≤ j − 1); the chosen j is the
    largest with coverage ≥ 95%."""
    values = [float(i + 1) for i in range(n)]  # x₍ⱼ₎ = j
    summary = length_ratios(values)
    assert summary is not None

    def coverage(j: int) -> float:
        return float(1 - 2 * stats.binom.cdf(j - 1, n, 0.5))

    feasible = [j for j in range(1, n // 2 + 1) if coverage(j) >= 0.95]
    if not feasible:
        assert summary.median_ci is None
    else:
        j = max(feasible)
        assert summary.median_ci == (float(j), float(n + 1 - j))


def test_length_ratios_single_item_and_none() -> None:
    single = length_ratios([2.0, None])
    assert single is not None and single.geometric_mean == pytest.approx(2.0)
    assert single.geometric_mean_ci is None and single.median_ci is None
    assert length_ratios([None, 0.0]) is None
    pairs = [(record(ratio=1.0), record(ratio=None))]
    assert summarize_degradation(pairs).length is None


def test_summary_reads_the_candidate_ratio_not_the_baseline() -> None:
    pairs = [(record(ratio=1.0), record(ratio=r)) for r in (2.0, 8.0)]
    length = summarize_degradation(pairs).length
    assert length is not None and length.geometric_mean == pytest.approx(4.0)
