"""Judge prompts filled as FastChat fills them (``llm_judge/common.py``): the prompt's ``system_prompt`` as the
system message and its ``prompt_template`` formatted with the question, the answer(s) and, for math, reasoning and
coding, the reference answer; turn 2 uses the ``-multi-turn`` prompts, which show both turns."""

from __future__ import annotations

from flipscope.models.base import GenRequest
from flipscope.tasks.mtbench import NEED_REF, JudgePrompt, MTBench, Question


def prompt_name(kind: str, question: Question, turn: int) -> str:
    """single-v1, single-math-v1, pair-v2, pair-math-v1, each with ``-multi-turn`` for turn 2."""
    ref = question.category in NEED_REF
    stem = {"single": "single-math-v1" if ref else "single-v1", "pairwise": "pair-math-v1" if ref else "pair-v2"}[kind]
    return stem + ("-multi-turn" if turn == 2 else "")


def _references(bench: MTBench, question: Question, turn: int) -> dict[str, str]:
    if question.category not in NEED_REF:
        return {}
    ref = bench.references[question.question_id]
    return {"ref_answer_1": ref[0], **({"ref_answer_2": ref[1]} if turn == 2 else {})}


def single(bench: MTBench, question: Question, answers: tuple[str, str], turn: int) -> tuple[JudgePrompt, GenRequest]:
    """The judge's request grading one model's answer to ``turn`` (1 or 2)."""
    prompt = bench.prompts[prompt_name("single", question, turn)]
    fields = _references(bench, question, turn)
    if turn == 1:
        fields |= {"question": question.turns[0], "answer": answers[0]}
    else:
        fields |= {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
    return prompt, GenRequest(prompt.template.format(**fields), chat=True, system=prompt.system)


def pairwise(
    bench: MTBench, question: Question, first: tuple[str, str], second: tuple[str, str], turn: int
) -> tuple[JudgePrompt, GenRequest]:
    """The judge's request comparing two models' answers, ``first`` shown as assistant A, ``second`` as B."""
    prompt = bench.prompts[prompt_name("pairwise", question, turn)]
    fields = _references(bench, question, turn)
    if turn == 1:
        fields |= {"question": question.turns[0], "answer_a": first[0], "answer_b": second[0]}
    else:
        fields |= {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_a_1": first[0],
            "answer_a_2": first[1],
            "answer_b_1": second[0],
            "answer_b_2": second[1],
        }
    return prompt, GenRequest(prompt.template.format(**fields), chat=True, system=prompt.system)
