"""Metrics: pure functions over paired per-item records; no model is needed to compute them."""

from flipscope.metrics.paired import (
    FlipCounts,
    choice_kl,
    flip_counts,
    flips_by_margin,
    mcnemar_exact,
    top_choice_share,
    top_margin,
    wilson_interval,
)
from flipscope.metrics.records import (
    AnswerDistance,
    FreeAnswer,
    ItemScore,
    Pair,
    Scoring,
    answer_distance,
    first_argmax,
    pair_up,
    same_answer,
)
from flipscope.metrics.summary import TaskSummary, summarize, summarize_run

__all__ = [
    "AnswerDistance",
    "FlipCounts",
    "FreeAnswer",
    "ItemScore",
    "Pair",
    "Scoring",
    "TaskSummary",
    "answer_distance",
    "choice_kl",
    "first_argmax",
    "flip_counts",
    "flips_by_margin",
    "mcnemar_exact",
    "pair_up",
    "same_answer",
    "summarize",
    "summarize_run",
    "top_choice_share",
    "top_margin",
    "wilson_interval",
]
