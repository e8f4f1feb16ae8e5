"""GSM8K: answer extraction as lm-eval's gsm8k_cot filters do it (checked against lm-eval's own code), and the
exemplars taken from the offline copy equal lm-eval's."""

from __future__ import annotations

import pytest

from flipscope.errors import FlipscopeError
from flipscope.tasks.gsm8k import INVALID, Filter, extract, is_correct, normalise, parse_exemplars, prompt

TEXTS = [
    "She has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18.",
    "The total is $1,250. The answer is $1,250.",  # strict fails on the "$"
    "The answer is 1,250.",
    "It costs 5 dollars and 30 cents. The answer is -7.5.",
    "So he has -3 apples left, I think 4",
    "No numbers at all here.",
    "The answer is 7",  # no full stop: the strict pattern needs one more character
    "Answer: 3 cats, 12 legs.",
    "",
    "#### 42",
    "The answer is 0.5.\n\nQ: another question? A: 99",
]


@pytest.mark.parametrize("how", list(Filter))
def test_extraction_matches_lm_eval_filters(how: Filter) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.filters.extraction import RegexFilter

    del lm_eval
    pattern = {
        Filter.STRICT: (r"The answer is (\-?[0-9\.\,]+).", 0),
        Filter.FLEXIBLE: (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
    }
    regex, group = pattern[how]
    theirs = list(RegexFilter(regex_pattern=regex, group_select=group).apply([[t] for t in TEXTS], [{}] * len(TEXTS)))
    assert [extract(t, how) for t in TEXTS] == [r[0] for r in theirs]


def test_exact_match_normalisation_matches_lm_eval() -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.api.metrics import exact_match_hf_evaluate

    ignore = [",", r"\$", "(?s).*#### ", r"\.$"]
    pairs = [("$1,250", "1250"), ("18.", "18"), ("-7.5", "-7.5"), ("7", "07"), ("#### 42", "42"), ("1.250", "1250")]
    for prediction, reference in pairs:
        theirs = exact_match_hf_evaluate([prediction], [reference], regexes_to_ignore=ignore, ignore_case=True)
        assert (normalise(prediction) == normalise(reference)) == bool(theirs["exact_match"]), (prediction, reference)


def test_hand_cases() -> None:
    assert is_correct("9 * 2 = 18. The answer is 18.", "18", Filter.STRICT)
    assert is_correct("The answer is $1,250 total.", "1250", Filter.FLEXIBLE)  # the last number, "$" and "," dropped
    assert not is_correct("The answer is 1,250", "1250", Filter.STRICT)  # no character after it: no strict match
    assert extract("nothing", Filter.FLEXIBLE) == INVALID and not is_correct("", "0", Filter.FLEXIBLE)
    assert extract("from -3 to 4 degrees", Filter.FLEXIBLE) == "4"
    assert prompt([("Q1?", "A1. The answer is 1.")], "Q2?") == "Q: Q1?\nA: A1. The answer is 1.\n\nQ: Q2?\nA:"


def test_malformed_exemplars_are_named() -> None:
    good = "Question: a?\nAnswer: x. So the answer is 1.\n\n" * 8 + "Question: q?\nAnswer:"
    assert len(parse_exemplars(good, "q?", "src")) == 8
    with pytest.raises(FlipscopeError, match="src: 7 exemplars"):
        parse_exemplars(good.replace("Question: a?\nAnswer: x. So the answer is 1.\n\n", "", 1), "q?", "src")
    with pytest.raises(FlipscopeError, match="does not end with its question"):
        parse_exemplars(good, "other?", "src")
    with pytest.raises(FlipscopeError, match="an exemplar is not"):
        parse_exemplars(good.replace("So the answer", "Thus the answer"), "q?", "src")


@pytest.mark.e2e
def test_offline_exemplars_are_lm_evals() -> None:
    """The 8 exemplars read from the wheel, rewritten, equal lm-eval 0.4.13's gsm8k_cot few-shot samples."""
    lm_eval = pytest.importorskip("lm_eval")
    from pathlib import Path

    import yaml

    from flipscope.tasks.gsm8k import load_gsm8k

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
    samples = yaml.load(config.read_text(), Loader=Loader)["fewshot_config"]["samples"]
    problems, exemplars = load_gsm8k()
    assert exemplars == [(s["question"], s["target"]) for s in samples]
    assert len(problems) == 1319 and problems[0].target == "18"


def test_free_form_tasks_are_found_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gsm8k`` names GSM8K in the free-form registry, and ``load_free_task`` loads the task it is given."""
    from flipscope.passes.generation import load_free_task
    from flipscope.tasks import FREE_FORM, GENERATIVE, free_form_task, gsm8k
    from flipscope.tasks.free import Graded, Problem

    assert free_form_task("gsm8k") is gsm8k.GSM8K and set(GENERATIVE) == set(FREE_FORM) >= {"gsm8k", "minerva_math500"}
    problems = [Problem(str(i), f"q{i}?", str(i)) for i in range(5)]
    monkeypatch.setattr(gsm8k, "load_gsm8k", lambda: (problems, [("e1?", "The answer is 1.")] * 8))
    task = load_free_task("gsm8k", limit=3, seed=0, fewshot=2)
    assert task.name == "gsm8k" and len(task.problems) == 3 and task.meta["fewshot"] == 2
    assert task.prefix == "Q: e1?\nA: The answer is 1.\n\n" * 2
    assert task.prompts == [task.prefix + f"Q: {p.question}\nA:" for p in task.problems]
    assert task.decoding.stop == gsm8k.STOP and task.decoding.max_new_tokens == gsm8k.MAX_NEW_TOKENS
    assert task.grade("so 3. The answer is 3.", "3") == Graded("3", True, True, True)


def test_an_unknown_free_form_task_is_a_one_line_error() -> None:
    from flipscope.passes.generation import load_free_task
    from flipscope.tasks import free_form_task

    with pytest.raises(FlipscopeError, match="unknown free-form task 'gsm9k' — did you mean 'gsm8k'") as caught:
        load_free_task("gsm9k", limit=None, seed=0)
    assert "\n" not in str(caught.value)
    with pytest.raises(FlipscopeError, match="unknown free-form task 'mmlu' — free-form tasks: gsm8k"):
        free_form_task("mmlu")
