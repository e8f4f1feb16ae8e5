"""MATH answers (tasks/math_answers.py, tasks/minerva_math.py) against lm-evaluation-harness 0.4.13's own
``minerva_math`` functions: the box found, the committed answer, the normalisation and SymPy equivalence on
answers written to be hard (units, thousands separators, tuples, \\left( … \\right), shorthand \\frac and \\sqrt,
\\boxed without braces), and — end to end — every MATH-500 solution and the grade of generated texts."""

from __future__ import annotations

import itertools

import pytest

from flipscope.tasks.free import Graded
from flipscope.tasks.math_answers import (
    NO_FINAL,
    boxed_answers,
    equivalent,
    last_boxed,
    normalise_answer,
    stated_answer,
)
from flipscope.tasks.minerva_math import check_fewshot, grade, question_prompt, shots

HARD = [
    "5", "5.", "x = 5", "\\frac12", "\\frac{1}{2}", "\\dfrac{1}{2}", "0.5", "1/2", "\\sqrt2", "\\sqrt[3]8",
    "\\sqrt[3]{8}", "2", "100,000", "100000", "0,1", "(0,1)", "\\left( 3, \\frac{\\pi}{2} \\right)",
    "\\left(3,\\frac{\\pi}{2}\\right)", "5 cm", "2\\pi cm", "2\\pi", "10^\\circ", "10^{\\circ}", "10", "\\$4.50",
    "4.50", "\\text{(C)}", "(C)", "\\textbf{(A)}", "3 \\text{ inches}", "3", "a 5", "an 8", "\\infty",
    "\\pi/2", "\\frac{\\pi}{2}", "[2,5)", "\\mbox{yes}", "x^2+2x+1", "(x+1)^2", "\\overline{AB}", "12 ways",
    "\\boxed{7}", "7", "-\\frac{2}{3}", "-\\frac23", "1,000,000", "1,00", "\\$", "", "\\left", "50\\%",
]  # fmt: skip

lm_utils = pytest.importorskip("lm_eval.tasks.minerva_math.utils", reason="lm-eval[math] is part of the dev extra")


@pytest.mark.parametrize("answer", HARD)
def test_normalisation_is_lm_evals(answer: str) -> None:
    assert normalise_answer(answer) == lm_utils.normalize_final_answer(answer)


@pytest.mark.parametrize(
    "text",
    ["no box", "so $\\boxed{5}$.", "\\boxed{\\frac{1}{2}} then \\boxed{3}", "\\boxed 5$ and more", "\\fbox{9}",
     "\\boxed{unclosed", "\\boxed{a{b}c}", "$\\boxed {x}$"],
)  # fmt: skip
def test_box_found_is_lm_evals(text: str) -> None:
    assert last_boxed(text) == lm_utils.last_boxed_only_string(text)


@pytest.mark.parametrize(
    "text",
    ["Final Answer: The final answer is $5$. I hope it is correct.", "Final Answer: The final answer is $5$",
     "Final Answer: The final answer is 3. I hope it is correct.\nFinal Answer: The final answer is 4.",
     "The answer is 5.", "", "Final Answer: The final answer is"],
)  # fmt: skip
def test_committed_answer_is_lm_evals(text: str) -> None:
    assert stated_answer(text) == lm_utils.get_unnormalized_answer(text)


def test_equivalence_is_lm_evals_on_every_pair() -> None:
    """Every ordered pair of the normalised hard answers: identical verdicts (the pairs include equal values
    written differently, values SymPy cannot parse, and an empty answer)."""
    normalised = sorted({normalise_answer(a) for a in HARD})
    differ = [(a, b) for a, b in itertools.product(normalised, repeat=2) if equivalent(a, b) != lm_utils.is_equiv(a, b)]
    assert differ == []
    assert equivalent(normalise_answer("\\frac12"), normalise_answer("0.5"))  # shown equal by SymPy, not by text
    assert not equivalent("", "")  # nothing stated is never right


def test_grade_commits_to_the_first_final_answer_and_keeps_strict_apart() -> None:
    text = "so $x=\\boxed{1/2}$.\nFinal Answer: The final answer is $0.5$. I hope it is correct."
    assert grade(text, "\\frac{1}{2}") == Graded("0.5", True, False, True)
    assert grade("I think it is 5", "5") == Graded(NO_FINAL, False, False, False)
    assert grade("Final Answer: The final answer is $5$. I hope it is correct.", "5") == Graded("5", True, True, True)
    # found, not committed: the right value boxed on the way, a wrong one as the final answer
    wrong = "so $\\boxed{1/2}$.\nFinal Answer: The final answer is $3$. I hope it is correct."
    assert grade(wrong, "\\frac{1}{2}") == Graded("3", False, False, True)
    assert grade(wrong, "7").found is False


def test_every_stated_answer_is_listed_for_found_but_not_committed() -> None:
    text = "We get $\\boxed{3}$, or rather \\boxed{\\frac12}.\n"
    text += "Final Answer: The final answer is $4$. I hope it is correct."
    assert sorted(boxed_answers(text)) == sorted(["4", "3", "\\frac{1}{2}"])
    assert list(boxed_answers("nothing here")) == []


def test_boxes_without_braces_right_after_are_taken_as_written() -> None:
    """lm-eval's unboxing asserts on these; a generated text holding them must not stop the grading."""
    for text in ("so $\\boxed\\frac12$", "\\boxed\\text{5}", "\\boxed\\n{5}", "a \\boxed"):
        assert isinstance(list(boxed_answers(text)), list)
    assert list(boxed_answers("so $\\boxed\\text{5}$")) == ["5"]


def test_prompt_is_lm_evals_layout_and_fewshot_is_checked() -> None:
    pairs = [("p1", "s1"), ("p2", "s2")]
    want = "Problem:\np1\n\nSolution: s1\n\nProblem:\np2\n\nSolution: s2\n\nProblem:\nq\n\nSolution:"
    assert shots(pairs) + question_prompt("q") == want
    assert question_prompt("q") == lm_utils.doc_to_text({"problem": "q"})
    assert check_fewshot(None) == 4 and check_fewshot(2) == 2
    from flipscope.errors import FlipscopeError

    with pytest.raises(FlipscopeError, match="4 exemplars"):
        check_fewshot(5)


@pytest.mark.e2e
def test_every_math500_gold_and_graded_text_agree_with_lm_eval() -> None:
    """On all 500 MATH-500 items: the gold answer is lm-eval's (from the solution, not oe-eval's ``answer``), the
    exemplars are lm-eval's, and texts committing to the item's own answer, to the next item's and to nothing are
    graded as lm-eval's ``process_results`` grades them."""
    from flipscope.tasks.minerva_math import exemplars, load_problems
    from flipscope.tasks.olmo import request_docs

    assert exemplars() == [(s["problem"], s["solution"]) for s in lm_utils.list_fewshot_samples()]
    docs = request_docs("minerva_math_500/gold_bpb_0shot", docs=500, fields={"index", "solution"}, key="index")
    problems = load_problems()
    theirs = [lm_utils.normalize_final_answer(lm_utils.remove_boxed(lm_utils.last_boxed_only_string(d["solution"])))
              for d in docs]  # fmt: skip
    assert [p.target for p in problems] == theirs
    differ = []
    for i, (doc, problem) in enumerate(zip(docs, problems, strict=True)):
        raw = lm_utils.remove_boxed(lm_utils.last_boxed_only_string(docs[(i + i % 2) % 500]["solution"]))
        for text in (f"Final Answer: The final answer is ${raw}$. I hope it is correct.", "no answer"):
            want = lm_utils.process_results({"answer": problem.target, "solution": doc["solution"]}, [text])
            if grade(text, problem.target).correct != bool(want["exact_match"]):
                differ.append((problem.item_id, text))
    assert differ == []


def test_another_antlr_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from flipscope.errors import FlipscopeError
    from flipscope.tasks import math_answers

    math_answers._sympy.cache_clear()
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "4.13.2")
    try:
        with pytest.raises(FlipscopeError, match=r"needs ANTLR 4\.11.*not 4\.13\.2"):
            math_answers.equivalent("1/2", "0.5")
    finally:
        math_answers._sympy.cache_clear()
