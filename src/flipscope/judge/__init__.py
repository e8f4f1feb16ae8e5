"""Judging free-form answers with a judge model (MT-Bench's single grades and pairwise verdicts)."""

from flipscope.judge.summary import (
    Grade,
    GradeSummary,
    Outcome,
    PairJudgement,
    PairSummary,
    pair_outcome,
    summarize_grades,
    summarize_pairs,
    win_rate,
)
from flipscope.judge.verdict import Winner, parse_pair, parse_rating

__all__ = [
    "Grade",
    "GradeSummary",
    "Outcome",
    "PairJudgement",
    "PairSummary",
    "Winner",
    "pair_outcome",
    "parse_pair",
    "parse_rating",
    "summarize_grades",
    "summarize_pairs",
    "win_rate",
]
