"""The flips explorer's rows: every item whose correctness changed from the baseline to a candidate, with what a
reader needs to judge it — the question and options (or both generations, diff-highlighted), both models' answers
and probabilities, the baseline's margin and the item's KL."""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass
from typing import Any

from flipscope.metrics import Pair, Scoring, answer_distance, choice_kl, pair_up, top_margin
from flipscope.metrics.degradation import Degradation, answer_degradation
from flipscope.metrics.paired import softmax
from flipscope.report.collect import CompareRun

C2I = "C→I"  # correct → incorrect
I2C = "I→C"


@dataclass(frozen=True)
class FlipRow:
    task: str
    candidate: str
    direction: str  # C2I or I2C
    item_id: str
    subject: str
    question: str
    options: list[str]  # empty for free-form items
    target: str  # the right option's letter, or the reference answer
    baseline_answer: str
    candidate_answer: str
    baseline_probs: list[float]  # softmax over the options; empty for free-form
    candidate_probs: list[float]
    margin: float | None  # the baseline's top-choice margin
    choice_kl: float | None
    token_kl: float | None  # answer-token KL, or teacher-forced KL for free-form items
    baseline_text: str = ""  # free-form: the two generations, HTML with the differing words marked
    candidate_text: str = ""
    degradation: str = ""  # free-form: how the candidate's answer degraded (loop, truncation, length, …)


def letter(index: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index] if 0 <= index < 26 else str(index)


def diff_html(a: str, b: str) -> tuple[str, str]:
    """Both texts HTML-escaped, with the words only one of them has wrapped in <del> (in ``a``) and <ins> (in
    ``b``): a word-level diff, whitespace kept."""
    wa, wb = re.findall(r"\s+|\S+", a), re.findall(r"\s+|\S+", b)
    out_a, out_b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        left, right = html.escape("".join(wa[i1:i2])), html.escape("".join(wb[j1:j2]))
        if op == "equal":
            out_a.append(left)
            out_b.append(right)
            continue
        if left:
            out_a.append(f"<del>{left}</del>")
        if right:
            out_b.append(f"<ins>{right}</ins>")
    return "".join(out_a), "".join(out_b)


def describe_degradation(d: Degradation) -> str:
    """One answer's degradation in a few words ("" where nothing degraded)."""
    said = []
    if d.empty:
        said.append("empty")
    if d.looped and d.loop_share is not None:
        said.append(f"loops (period {d.loop_period}, the last {d.loop_share:.0%} of the answer)")
    if d.truncated:
        said.append("hit the token limit")
    if d.length_ratio is not None and not 0.5 <= d.length_ratio <= 2:
        said.append(f"{d.length_ratio:.1f}× the baseline's length")
    if d.found_not_committed:
        said.append("the right answer is in the text but not the one committed")
    return "; ".join(said)


def _questions(items: Any) -> dict[tuple[str, str], dict[str, Any]]:
    if items is None:
        return {}
    return {(str(r["task"]), str(r["item_id"])): r for r in items.to_dict("records")}


def _row(pair: Pair, candidate: str, question: dict[str, Any]) -> FlipRow:
    b, c = pair.baseline, pair.candidate
    common = {
        "task": b.task,
        "candidate": candidate,
        "direction": C2I if b.correct else I2C,
        "item_id": b.item_id,
        "subject": b.subject,
        "question": str(question.get("question", "")),
    }
    if b.free is not None and c.free is not None:
        left, right = diff_html(b.free.text, c.free.text)
        distance = answer_distance(pair)
        return FlipRow(
            **common,
            options=[],
            target=str(question.get("target", "")),
            baseline_answer=b.free.answer,
            candidate_answer=c.free.answer,
            baseline_probs=[],
            candidate_probs=[],
            margin=None,
            choice_kl=None,
            token_kl=distance.teacher_kl if distance is not None else None,
            baseline_text=left,
            candidate_text=right,
            degradation=describe_degradation(answer_degradation(c.free, b.free)),
        )
    choices = question.get("choices")
    if b.scoring == Scoring.GREEDY:  # one continuation judged by greedy match (LAMBADA): no choice distribution
        said = {True: "the target (greedy)", False: "not the greedy continuation"}
        word = str(choices[b.target]) if choices is not None and b.target < len(choices) else letter(b.target)
        return FlipRow(
            **common,
            options=[],
            target=word,
            baseline_answer=said[b.correct],
            candidate_answer=said[c.correct],
            baseline_probs=[],
            candidate_probs=[],
            margin=None,
            choice_kl=None,
            token_kl=c.token_kl,
        )
    return FlipRow(
        **common,
        options=[str(o) for o in choices] if choices is not None else [],
        target=letter(b.target),
        baseline_answer=letter(b.choice),
        candidate_answer=letter(c.choice),
        baseline_probs=softmax(b.logprobs),
        candidate_probs=softmax(c.logprobs),
        margin=top_margin(b.logprobs),
        choice_kl=choice_kl(b.logprobs, c.logprobs),
        token_kl=c.token_kl,
    )


def flipped_items(run: CompareRun) -> list[FlipRow]:
    """Every (candidate, item) whose correctness differs from the baseline's — the items the flips count, task by
    task; items with NaN or infinite log-probabilities are left out, as they are from the flips."""
    base = run.scores.get(run.run.baseline.spec, [])
    questions = _questions(run.items)
    tasks = {t.name for t in run.run.tasks}
    rows = []
    for cand in run.run.candidates:
        for pair in pair_up(base, run.scores.get(cand.spec, [])):
            b, c = pair.baseline, pair.candidate
            if b.task not in tasks or not (b.finite and c.finite) or b.correct == c.correct:
                continue
            rows.append(_row(pair, cand.spec, questions.get((b.task, b.item_id), {})))
    return rows
