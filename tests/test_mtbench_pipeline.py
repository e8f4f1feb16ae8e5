"""MT-Bench with scripted models and scripted judges: both turns answered (turn 2 after the model's own turn 1),
judge-free distances on the baseline's answers, single grades, pairwise verdicts in both orders, re-judging a
stored run with a second judge, and a judging run killed with SIGKILL that resumes without judging anything twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import flipscope
from flipscope.cli import cli
from mtbench_data import PROMPTS, write_mtbench
from tests.conftest import SCRIPTS, Script


def _row(shift: float) -> np.ndarray:
    logits = np.arange(16, dtype=np.float64) * 0.3 + shift * np.sin(np.arange(16))
    return (logits - np.log(np.exp(logits).sum()))[None].astype(np.float32)  # [1, V]


def answerer(tag: str):  # type: ignore[no-untyped-def]
    return lambda prompt: f"{tag} answer to <{prompt}>"


def fair_judge(prompt: str) -> str:
    """Grades the baseline's answers 8 and the candidate's 5, never verdicts on roleplay; pairwise prefers the
    baseline's answer, except on math, where it always names the answer shown first (position bias)."""
    if "<A>" in prompt:
        if prompt.startswith("Q=math") or "Q1=math" in prompt:
            return "Both fine. [[A]]"
        a = re.search(r"<A>(.*?)</A>", prompt, re.S)
        assert a is not None
        return "[[A]]" if a.group(1).startswith("base") else "[[B]]"
    if "roleplay question" in prompt:
        return "I cannot decide."
    shown = prompt.split("A2=")[-1] if "A2=" in prompt else prompt.split("\nA=")[-1]
    return "Rating: [[8]]" if shown.startswith("base") else "Rating: [[5]]"


def _scripts(scripts: dict[str, Script]) -> None:
    scripts["b"] = Script(lambda i, r: (-1.0,), rows=lambda i, o: _row(0.0), answer=answerer("base"))
    scripts["c"] = Script(lambda i, r: (-1.5,), rows=lambda i, o: _row(0.2), answer=answerer("cand"))
    scripts["j"] = Script(lambda i, r: (0.0,), answer=fair_judge)
    scripts["k"] = Script(lambda i, r: (0.0,), answer=lambda prompt: "Rating: [[3]], no, [[9]]; [[A]] or [[B]]")


def test_mtbench_answers_distances_and_judgements(scripts: dict[str, Script], tmp_path: Path) -> None:
    _scripts(scripts)
    seen: list[str] = []
    scripts["j"] = Script(lambda i, r: (0.0,), answer=lambda prompt: seen.append(prompt) or fair_judge(prompt))
    data = write_mtbench(tmp_path / "data")
    settings = flipscope.MTBenchSettings(judge="mock:j", data=str(data), cache_dir=str(tmp_path / "cache"))
    result = flipscope.mtbench("mock:b", ["mock:c"], settings, out=tmp_path / "run")
    answers = pd.read_parquet(tmp_path / "run" / "answers.parquet")
    assert len(answers) == 2 * 16 * 2 and set(answers["turn"]) == {1, 2}
    first = answers[(answers.model == "mock:b") & (answers.turn == 1)].iloc[0]
    assert first.text == f"base answer to <{first.category} question 0 {{braces}}>"
    # turn 2 is graded with the multi-turn prompt holding the model's own turn-1 answer, then the turn-2 question,
    # then its turn-2 answer (math: with both reference answers) — filled here from the data files, not by flipscope
    judged = pd.read_parquet(tmp_path / "run" / "judgements.parquet")
    questions = {q["question_id"]: q for q in map(json.loads, (data / "mt_bench" / "question.jsonl").open())}
    text = {(r.model, r.question_id, r.turn): r.text for r in answers.itertuples()}
    for category, name in (("writing", "single-v1-multi-turn"), ("math", "single-math-v1-multi-turn")):
        row = judged[(judged["mode"] == "single") & (judged.turn == 2) & (judged.model == "mock:c")
                     & (judged.category == category)].iloc[0]  # fmt: skip
        qid = int(row.question_id)
        a1, a2 = text[("mock:c", qid, 1)], text[("mock:c", qid, 2)]
        q1, q2 = questions[qid]["turns"]
        assert a1 == f"cand answer to <{q1}>" and a2 == f"cand answer to <{q2}>"  # turn 2 asked as its own prompt
        expected = PROMPTS[name][1].format(question_1=q1, question_2=q2, answer_1=a1, answer_2=a2,
                                           ref_answer_1=f"ref{qid}a", ref_answer_2=f"ref{qid}b")  # fmt: skip
        (got,) = [p for p in seen if f"A2={a2}" in p]  # the one single grade of this turn-2 answer
        assert got == expected and row.prompt == name and row.raw == fair_judge(got)
        if category == "writing":
            assert got.index(f"A1={a1}\n") < got.index(f"Q2={q2}\n") < got.index(f"A2={a2}")

    summary = result.run.summary
    dist = summary["distances"]["mock:c"]["all"]
    assert dist["measured"] == 32 and dist["delta_nll_mean"] == pytest.approx(0.5) and dist["teacher_kl_mean"] > 0
    assert dist["identical"] == 0.0
    j = summary["mock:j"]
    grades = {g["model"]: g for g in j["grades"]}
    assert grades["mock:b"]["overall"] == 8.0 and grades["mock:c"]["overall"] == 5.0
    assert grades["mock:c"]["unparseable"] == 4 and grades["mock:c"]["graded"] == 28  # roleplay: 2 questions × 2
    (pair,) = j["pairs"]
    assert (pair["wins"], pair["ties"], pair["losses"], pair["inconsistent"]) == (0, 4, 28, 4)
    assert pair["win_rate"] == pytest.approx(2 / 32)

    # re-judged with a second judge: both judges' judgements kept, nothing generated again by the models
    calls = (len(scripts["b"].generated), len(scripts["c"].generated))
    flipscope.judge_run(tmp_path / "run", "mock:k", flipscope.MTBenchSettings(cache_dir=str(tmp_path / "cache")))
    assert (len(scripts["b"].generated), len(scripts["c"].generated)) == calls
    judged = pd.read_parquet(tmp_path / "run" / "judgements.parquet")
    assert set(judged["judge"]) == {"mock:j", "mock:k"}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["judges"] == ["mock:j", "mock:k"]
    k = run["summary"]["mock:k"]
    assert k["grades"][0]["unparseable"] == 32 and k["pairs"][0]["invalid"] == 32  # two different verdicts each
    shown = CliRunner().invoke(cli, ["report", str(tmp_path / "run")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "win rate" in shown.output and "mock:k" in shown.output and "teacher KL" in shown.output


def test_mtbench_judgeless_run_and_cli_errors(scripts: dict[str, Script], tmp_path: Path) -> None:
    _scripts(scripts)
    data = write_mtbench(tmp_path / "data", per_category=1)
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "mtbench",
            "mock:b",
            "mock:c",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--greedy",
        ],
        terminal_width=200,
    )
    assert out.exit_code == 0, out.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["judges"] == [] and run["settings"]["greedy"] is True and run["settings"]["seed"] == 0
    assert run["summary"]["distances"]["mock:c"]["all"]["measured"] == 16
    judged = runner.invoke(
        cli,
        ["judge", str(tmp_path / "run"), "--judge", "mock:j", "--cache-dir", str(tmp_path / "cache"), "--no-pairwise"],
        terminal_width=200,
    )
    assert judged.exit_code == 0, judged.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["judges"] == ["mock:j"] and run["summary"]["mock:j"]["pairs"] == []
    assert {g["model"]: g["overall"] for g in run["summary"]["mock:j"]["grades"]} == {"mock:b": 8.0, "mock:c": 5.0}
    assert "single grades (1–10) by mock:j" in judged.output
    bad = runner.invoke(cli, ["judge", str(tmp_path), "--judge", "mock:j"])
    assert bad.exit_code != 0 and "run.json" in str(bad.exception or bad.output)


LOADS: list[str] = []


def _counted(spec, options):  # type: ignore[no-untyped-def]
    """The mock backend, counting loads, with a parameter count as a local model reports one."""
    from tests.conftest import MockBackend

    LOADS.append(spec.location)
    backend = MockBackend(spec, SCRIPTS[spec.location])
    backend.info.details["parameters"] = 1000 + len(spec.location)
    return backend


def test_a_second_run_with_everything_stored_loads_no_model(scripts: dict[str, Script], tmp_path: Path) -> None:
    from flipscope.models import Source, register_source

    register_source(Source("counted", "mock, counting loads", lambda loc: {"counted": loc}, _counted))
    _scripts(scripts)
    data = write_mtbench(tmp_path / "data", per_category=1)
    settings = flipscope.MTBenchSettings(judge="counted:j", data=str(data), cache_dir=str(tmp_path / "cache"))
    LOADS.clear()
    first = flipscope.mtbench("counted:b", ["counted:c"], settings, out=tmp_path / "one")
    assert sorted(LOADS) == ["b", "c", "j"]  # each model once
    LOADS.clear()
    second = flipscope.mtbench("counted:b", ["counted:c"], settings, out=tmp_path / "two")
    assert LOADS == []  # answers, teacher-forced passes and judgements all stored: nothing loaded
    assert second.run.summary == first.run.summary
    assert (second.run.baseline.parameters, second.run.candidates[0].parameters) == (1001, 1001)
    assert second.run.notes == first.run.notes
    answers = [pd.read_parquet(tmp_path / name / "answers.parquet") for name in ("one", "two")]
    assert answers[0].equals(answers[1])


DRIVER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from tests.conftest import SCRIPTS, Script
import flipscope

log = Path({log!r})

def judge(prompt):
    with log.open("a") as f:
        f.write(json.dumps(prompt) + "\\n")
    time.sleep(0.02)
    return "Rating: [[%d]]" % (len(prompt) % 10 + 1) if "<A>" not in prompt else "[[%s]]" % "AB"[len(prompt) % 2]

SCRIPTS["b"] = Script(lambda i, r: (-1.0,), answer=lambda p: "base says " + p)
SCRIPTS["c"] = Script(lambda i, r: (-1.5,), answer=lambda p: "cand says " + p)
SCRIPTS["j"] = Script(lambda i, r: (0.0,), answer=judge)
settings = flipscope.MTBenchSettings(judge="mock:j", data={data!r}, cache_dir={cache!r})
if sys.argv[1:] == ["resume"]:  # the answers are in the run directory: judge them
    flipscope.judge_run({out!r}, "mock:j", settings)
else:
    flipscope.mtbench("mock:b", ["mock:c"], settings, out={out!r})
"""


def _driver(tmp_path: Path, name: str, data: Path, cache: Path) -> tuple[Path, Path]:
    script, log = tmp_path / f"{name}.py", tmp_path / f"{name}.log"
    tests = str(Path(__file__).resolve().parent.parent)
    script.write_text(
        DRIVER.format(tests=tests, log=str(log), data=str(data), cache=str(cache), out=str(tmp_path / f"{name}-run"))
    )
    return script, log


def test_judging_killed_with_sigkill_resumes_without_judging_twice(tmp_path: Path) -> None:
    data = write_mtbench(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    whole, whole_log = _driver(tmp_path, "whole", data, tmp_path / "cache-whole")
    subprocess.run([sys.executable, str(whole)], check=True, env=env, timeout=300)
    n = len(whole_log.read_text().splitlines())
    assert n == 2 * 32 + 2 * 32  # single for both models, pairwise in both orders

    killed, log = _driver(tmp_path, "killed", data, tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, str(killed)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 40):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    judged_before = len(log.read_text().splitlines())
    assert 40 <= judged_before < n
    # the run directory says judging did not finish: its answers are there, no judge is listed
    assert json.loads((tmp_path / "killed-run" / "run.json").read_text())["judges"] == []
    assert len(pd.read_parquet(tmp_path / "killed-run" / "judgements.parquet")) == 0
    subprocess.run([sys.executable, str(killed), "resume"], check=True, env=env, timeout=300)
    asked = log.read_text().splitlines()
    # only the chunk in flight when it was killed is asked again (2 × batch size = 32 requests per stored chunk)
    assert len(asked) - n <= 32
    assert set(asked) == set(whole_log.read_text().splitlines())
    a = pd.read_parquet(tmp_path / "killed-run" / "judgements.parquet")
    b = pd.read_parquet(tmp_path / "whole-run" / "judgements.parquet")
    assert len(a) == len(b) == 32 * 2 + 32 and a.equals(b)
    answers = [pd.read_parquet(tmp_path / f"{name}-run" / "answers.parquet") for name in ("killed", "whole")]
    assert answers[0].equals(answers[1])
