"""Judge verdicts, the swap and tie rules, summaries, and judge prompts filled from MT-Bench files."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipscope.errors import FlipscopeError
from flipscope.judge import (
    Grade,
    Outcome,
    PairJudgement,
    Winner,
    pair_outcome,
    parse_pair,
    parse_rating,
    summarize_grades,
    summarize_pairs,
    win_rate,
)
from flipscope.judge import prompts as judge_prompts
from flipscope.tasks.mtbench import load_mtbench
from mtbench_data import write_mtbench


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is helpful and correct. Rating: [[8]]", 8.0),
        ("Rating: [[7.5]]", 7.5),
        ("[[10]]", 10.0),
        ("Explanation … Rating: [7]", 7.0),  # FastChat's fallback pattern
        ("Rating: [[6]] … so again [[6]]", 6.0),  # the same verdict twice
        ("no verdict at all", None),
        ("Rating: [[3]] or maybe [[9]]", None),  # two different verdicts
        ("Rating: [[0]]", None),  # out of range
        ("Rating: [[11]]", None),
        ("Rating: [[eight]]", None),
        ("", None),
    ],
)
def test_rating_parsing(text: str, expected: float | None) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Assistant A follows the instructions better. [[A]]", Winner.A),
        ("[[B]]", Winner.B),
        ("Both are equally good: [[C]]", Winner.TIE),
        ("Final verdict: [[A]]. Again: [[A]]", Winner.A),
        ("[[A]] ... on reflection [[B]]", None),  # two different verdicts
        ("I prefer A.", None),
        ("[A]", None),
        ("[[D]]", None),
    ],
)
def test_pair_parsing(text: str, expected: Winner | None) -> None:
    assert parse_pair(text) == expected


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        (Winner.B, Winner.A, Outcome.WIN),  # candidate shown second, then first: chosen both times
        (Winner.A, Winner.B, Outcome.LOSS),  # baseline chosen both times
        (Winner.A, Winner.A, Outcome.TIE),  # always the first shown: position bias → tie
        (Winner.B, Winner.B, Outcome.TIE),  # always the second shown
        (Winner.TIE, Winner.TIE, Outcome.TIE),
        (Winner.B, Winner.TIE, Outcome.TIE),  # a win in one order only
        (None, Winner.A, Outcome.INVALID),
        (Winner.B, None, Outcome.INVALID),
    ],
)
def test_swap_and_tie_rules(first: Winner | None, second: Winner | None, outcome: Outcome) -> None:
    assert pair_outcome(first, second) is outcome


def test_pair_summary_win_rate_and_order_flips() -> None:
    def pair(qid: int, cat: str, first: Winner | None, second: Winner | None) -> PairJudgement:
        return PairJudgement("j", "c", qid, cat, 1, "pair-v2", "", "", first, second)

    pairs = [
        pair(1, "math", Winner.B, Winner.A),  # win
        pair(2, "math", Winner.A, Winner.A),  # flips with the order → tie
        pair(3, "writing", Winner.A, Winner.B),  # loss
        pair(4, "writing", None, Winner.A),  # unparseable: counted, not in the rate
    ]
    (s,) = summarize_pairs(pairs)
    assert (s.wins, s.ties, s.losses, s.invalid, s.inconsistent) == (1, 1, 1, 1, 1)
    assert s.win_rate == pytest.approx((1 + 0.5) / 3)
    assert s.categories == {"math": pytest.approx(0.75), "writing": 0.0}
    assert win_rate([Outcome.INVALID]) is None


def test_grade_summary_per_turn_and_category() -> None:
    grades = [
        Grade("j", "m", 1, "math", 1, "single-math-v1", "", 8.0),
        Grade("j", "m", 1, "math", 2, "single-math-v1-multi-turn", "", 4.0),
        Grade("j", "m", 2, "writing", 1, "single-v1", "", 6.0),
        Grade("j", "m", 2, "writing", 2, "single-v1-multi-turn", "", None),
    ]
    (s,) = summarize_grades(grades)
    assert s.overall == pytest.approx(6.0) and s.turns == {1: 7.0, 2: 4.0}
    assert s.categories == {"math": 6.0, "writing": 6.0} and (s.graded, s.unparseable) == (3, 1)


def test_prompts_filled_per_category_and_turn(tmp_path: Path) -> None:
    bench = load_mtbench(write_mtbench(tmp_path))
    by_cat = {q.category: q for q in bench.questions}
    math, writing = by_cat["math"], by_cat["writing"]
    ref = bench.references[math.question_id]
    prompt, request = judge_prompts.single(bench, math, ("a1", "a2"), 1)
    assert prompt.name == "single-math-v1" and request.system == "Grade fairly." and request.chat
    assert request.prompt == f"Q={math.turns[0]}\nREF={ref[0]}\nA=a1\nRate [[n]]."
    prompt, request = judge_prompts.single(bench, math, ("a1", "a2"), 2)
    assert prompt.name == "single-math-v1-multi-turn"
    assert request.prompt == f"Q1={math.turns[0]}\nR1={ref[0]}\nQ2={math.turns[1]}\nR2={ref[1]}\nA1=a1\nA2=a2"
    prompt, request = judge_prompts.single(bench, writing, ("{x}", "y"), 1)  # braces in answers stay as they are
    assert prompt.name == "single-v1" and request.prompt == f"Q={writing.turns[0]}\nA={{x}}\nRate [[n]]."
    prompt, request = judge_prompts.pairwise(bench, writing, ("b1", "b2"), ("c1", "c2"), 2)
    assert prompt.name == "pair-v2-multi-turn"
    assert request.prompt == f"Q1={writing.turns[0]}\nQ2={writing.turns[1]}\n<A>b1|b2</A>\n<B>c1|c2</B>"
    for q in bench.questions:
        name = judge_prompts.prompt_name("pairwise", q, 1)
        assert name == ("pair-math-v1" if q.category in ("math", "reasoning", "coding") else "pair-v2")


def test_bad_mtbench_folders_are_named(tmp_path: Path) -> None:
    folder = write_mtbench(tmp_path / "a")
    (folder / "judge_prompts.jsonl").write_text('{"name": "pair-v2"}\n')
    with pytest.raises(FlipscopeError, match=r"judge_prompts.jsonl, line 1: no type"):
        load_mtbench(folder)
    folder = write_mtbench(tmp_path / "b")
    (folder / "mt_bench" / "reference_answer" / "gpt-4.jsonl").write_text("")
    with pytest.raises(FlipscopeError, match="no reference answer for questions"):
        load_mtbench(folder)
    with pytest.raises(FlipscopeError, match=r"no mt_bench/question\.jsonl"):
        load_mtbench(tmp_path / "c")
