"""HumanEval and MBPP (tasks/code.py): lm-eval 0.4.13's prompts and programs (the prediction, a newline, the tests),
graded by running them in the sandbox — a right program passes, a wrong one fails, a hostile one is stopped and
named by its outcome — and, end to end, every item's reference solution passing as lm-eval's code_eval runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flipscope.tasks.code import HUMANEVAL, MBPP, grade, mbpp_prompt, mbpp_shots, program

TARGET = json.dumps({"head": "def add(a, b):\n", "tests": "def check(f):\n    assert f(2, 3) == 5\ncheck(add)"})


def test_program_is_prediction_newline_tests() -> None:
    assert program("    return a + b", TARGET) == "def add(a, b):\n    return a + b\ndef check(f):\n" + (
        "    assert f(2, 3) == 5\ncheck(add)"
    )


@pytest.mark.parametrize(
    ("completion", "answer"),
    [("    return a + b", "passed"), ("    return a * b", "failed"), ("    while True: pass", "timeout"),
     ("    return a +", "failed"), ("    return a * b\nimport sys\nsys.exit(0)", "failed"),
     ("    return a * b\nimport os\nos._exit(0)", "failed"),
     ("    return a + b\nif __name__ == '__main__':\n    raise ValueError", "passed")],
)  # fmt: skip
def test_grade_runs_the_program(completion: str, answer: str) -> None:
    graded = grade(completion, TARGET)
    assert (graded.answer, graded.correct, graded.correct_strict) == (answer, answer == "passed", answer == "passed")


def test_mbpp_prompt_is_lm_evals_template() -> None:
    """The item's part and the exemplars' layout, rendered from lm-eval's own mbpp.yaml."""
    lm_eval = pytest.importorskip("lm_eval")
    import jinja2
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((Path(lm_eval.__file__).parent / "tasks/mbpp/mbpp.yaml").read_text(), Loader=Loader)
    doc = {"text": "Add.", "test_list": ["assert f(1)", "assert f(2)", "assert f(3)"], "code": "def f(x):\r\n  x"}
    text, target = (jinja2.Template(config[k], keep_trailing_newline=True) for k in ("doc_to_text", "doc_to_target"))
    assert mbpp_prompt(doc["text"], doc["test_list"]) == text.render(**doc)
    shot = text.render(**doc) + config["target_delimiter"] + target.render(**doc, is_fewshot=True)
    assert mbpp_shots([(doc["text"], doc["test_list"], doc["code"])]) == shot + "\n\n"
    assert MBPP.stop == tuple(config["generation_kwargs"]["until"])
    humaneval = yaml.load((Path(lm_eval.__file__).parent / "tasks/humaneval/humaneval.yaml").read_text(), Loader=Loader)
    assert HUMANEVAL.stop == tuple(humaneval["generation_kwargs"]["until"])
    assert HUMANEVAL.max_new_tokens == humaneval["generation_kwargs"]["max_gen_toks"]


@pytest.mark.e2e
def test_every_reference_solution_passes_and_exemplars_are_lm_evals() -> None:
    """Every HumanEval canonical solution and MBPP reference program passes (MBPP's four that need the
    ``test_setup_code`` lm-eval leaves out fail, in lm-eval too); MBPP's exemplars read from lm-eval's wheel."""
    from flipscope.plumbing.sandbox import SandboxLimits, run_many
    from flipscope.tasks.code import humaneval_problems, mbpp_exemplars, mbpp_problems
    from flipscope.tasks.olmo import request_docs

    shots = mbpp_exemplars()  # (lm-eval's utils cannot be imported offline: it loads code_eval from the hub)
    assert [len(tests) for _, tests, _ in shots] == [3, 3, 3] and shots[0][0].startswith("Write a function to find")
    human = request_docs("codex_humaneval/gold_bpb_0shot", docs=164, fields={"canonical_solution"}, key="task_id")
    mbpp = request_docs("codex_mbpp/gold_bpb_0shot", docs=500, fields={"code", "test_setup_code"}, key="task_id")
    programs = [program(d["canonical_solution"], p.target) for d, p in zip(human, humaneval_problems(), strict=True)]
    programs += [program(d["code"], p.target) for d, p in zip(mbpp, mbpp_problems(), strict=True)]
    ran = run_many(programs, limits=SandboxLimits(wall_seconds=10.0))
    failed = [i for i, r in enumerate(ran) if r.outcome.value != "passed"]
    needs_setup = [164 + i for i, d in enumerate(mbpp) if d["test_setup_code"].strip()]
    assert failed == needs_setup, [(i, ran[i].outcome, ran[i].seconds, ran[i].stderr[-200:]) for i in failed]


def _lm_eval_function(path: Path, name: str):  # type: ignore[no-untyped-def]
    """One function of an lm-eval task's utils.py, compiled alone (the module itself loads code_eval from the hub
    on import, which cannot run offline)."""
    import ast

    tree = ast.parse(path.read_text())
    node = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == name)
    namespace: dict = {}  # type: ignore[type-arg]
    exec(compile(ast.Module([node], []), str(path), "exec"), {"re": __import__("re")}, namespace)
    return namespace[name]


@pytest.mark.e2e
def test_the_programs_run_are_lm_evals_on_every_item() -> None:
    """What code_eval executes is ``prediction + "\\n" + reference``: for every HumanEval and MBPP item and three
    completions (the reference, nothing, the next item's), lm-eval's own ``build_predictions`` (HumanEval: the
    prompt before the completion; plain MBPP: the generation as it is) and its yaml's ``doc_to_target`` give the
    program flipscope runs, character for character — so, run under the same 3 s limit, graded the same."""
    lm_eval = pytest.importorskip("lm_eval")
    import jinja2
    import yaml

    from flipscope.tasks.code import humaneval_problems, mbpp_problems
    from flipscope.tasks.olmo import request_docs

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    tasks = Path(lm_eval.__file__).parent / "tasks"
    build = _lm_eval_function(tasks / "humaneval/utils.py", "build_predictions")
    human_target = jinja2.Template(yaml.load((tasks / "humaneval/humaneval.yaml").read_text(), Loader=Loader)[
        "doc_to_target"], keep_trailing_newline=True)  # fmt: skip
    mbpp_target = jinja2.Template(yaml.load((tasks / "mbpp/mbpp.yaml").read_text(), Loader=Loader)["doc_to_target"],
                                  keep_trailing_newline=True)  # fmt: skip
    fields = {"task_id", "prompt", "test", "entry_point", "canonical_solution"}
    human = request_docs("codex_humaneval/gold_bpb_0shot", docs=164, fields=fields, key="task_id")
    differ = []
    for i, (doc, problem) in enumerate(zip(human, humaneval_problems(), strict=True)):
        for completion in (doc["canonical_solution"], "", human[(i + 1) % 164]["canonical_solution"]):
            theirs = build([[completion]], [doc])[0][0] + "\n" + human_target.render(**doc)
            if program(completion, problem.target) != theirs:
                differ.append(problem.item_id)
    mbpp = request_docs("codex_mbpp/gold_bpb_0shot", docs=500, fields={"task_id", "code", "test_list"}, key="task_id")
    for i, (doc, problem) in enumerate(zip(mbpp, mbpp_problems(), strict=True)):
        for completion in (doc["code"], "", mbpp[(i + 1) % 500]["code"]):
            if program(completion, problem.target) != completion + "\n" + mbpp_target.render(**doc):
                differ.append(problem.item_id)
    assert differ == []
