"""``compare --sequential`` through the scripted backend: candidates stop at different steps once decided, the
baseline is scored only as far as the furthest one needed, chunks are cached and continued, and the decision in
run.json is the one the report recomputes from the records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from flipscope import compare, load_run
from flipscope.errors import FlipscopeError
from flipscope.metrics.noise_floor import indistinguishable
from flipscope.metrics.sequential import SequentialPlan, confidence_sequence
from flipscope.report.table import floor_cells
from flipscope.runs.noise import NoiseFloor
from flipscope.tasks import ScoreRequest
from tests.conftest import Script

N_ITEMS = 600


@pytest.fixture
def long_file(tmp_path: Path) -> Path:
    rows = [
        {"id": f"q{i}", "question": f"Item {i}: which?", "choices": ["a", "bb", "ccc", "dddd"], "answer": i % 4}
        for i in range(N_ITEMS)
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def picker(wrong_every: int | None) -> Script:
    """Right on every item, except those whose number is a multiple of ``wrong_every`` (chosen by the item's text,
    not its place in a call: a sequential run scores the items in chunks, in a shuffled order)."""

    def logprobs(_: int, request: ScoreRequest) -> tuple[float, ...]:
        found = re.search(r"Item (\d+):", request.prompt)
        assert found is not None
        item = int(found.group(1))
        pick = item % 4
        if wrong_every is not None and item % wrong_every == 0:
            pick = (pick + 1) % 4
        return tuple(-1.0 if o == pick else -3.0 for o in range(len(request.continuations)))

    return Script(logprobs)


def run(long_file: Path, tmp_path: Path, out: str, plan: SequentialPlan, *cands: str, **fields: object):
    return compare(
        "mock:base",
        list(cands),
        tasks=[str(long_file)],
        out=tmp_path / out,
        cache_dir=tmp_path / "cache",
        sequential=plan,
        **fields,
    )


def test_candidates_stop_when_decided_and_the_baseline_goes_no_further(scripts, long_file, tmp_path) -> None:
    scripts["base"] = picker(None)
    scripts["bad"] = picker(4)  # 25% flips
    scripts["good"] = picker(97)  # about 1% flips
    plan = SequentialPlan(flip_budget=8, chunk=40)
    result = run(long_file, tmp_path, "run", plan, "mock:bad", "mock:good")
    bad, good = (result.summary[c]["long"].sequential for c in ("mock:bad", "mock:good"))
    assert bad is not None and good is not None
    assert (bad.decision, good.decision) == ("above", "below")
    assert bad.n < good.n < N_ITEMS and bad.n % 40 == 0 and good.n % 40 == 0  # rows that stop at different steps
    assert bad.available == N_ITEMS and bad.alpha == 0.05
    # the interval is the confidence sequence at the counts the candidate stopped at, and it excludes the budget
    s = result.summary["mock:good"]["long"]
    assert good.interval == pytest.approx(confidence_sequence(s.flips_c2i + s.flips_i2c, s.n, 0.05))
    assert good.interval[1] < 0.08 < bad.interval[0]
    # the baseline was scored as far as the furthest candidate, the records hold only the items scored
    records = pd.read_parquet(result.out / "records.parquet")
    assert (records.role == "baseline").sum() == good.n
    assert (records.model == "mock:bad").sum() == bad.n
    assert set(records[records.model == "mock:bad"].item_id) <= set(records[records.role == "baseline"].item_id)
    items = pd.read_parquet(result.out / "items.parquet")
    assert len(items) == good.n
    # the items came in a shuffled order, not the file's
    used = records[records.role == "baseline"].item_id.str[1:].astype(int)
    assert used.max() > good.n
    # the report recomputes the same decisions from the records
    again = load_run(result.out).summary
    assert again["mock:bad"]["long"].sequential == bad and again["mock:good"]["long"].sequential == good
    assert any("anytime-valid" in n for n in result.run.notes)
    assert result.run.settings.sequential == {"flip_budget": 8, "precision": 2.0, "alpha": 0.05, "chunk": 40}


def test_chunks_are_cached_and_a_larger_limit_continues_the_sequence(scripts, long_file, tmp_path) -> None:
    scripts["base"] = picker(None)
    scripts["cand"] = picker(10)  # 10% flips: close to the budget, so the cap is reached
    plan = SequentialPlan(flip_budget=9, chunk=50)
    first = run(long_file, tmp_path, "a", plan, "mock:cand", limit=100)
    state = first.summary["mock:cand"]["long"].sequential
    assert state is not None and (state.decision, state.n, state.available) == ("undecided", 100, 100)
    calls = len(scripts["base"].calls), len(scripts["cand"].calls)
    second = run(long_file, tmp_path, "b", plan, "mock:cand", limit=200)
    assert second.summary["mock:cand"]["long"].n == 200
    # the first 100 items came from the cache: each model scored only the two new chunks
    assert len(scripts["base"].calls) - calls[0] == 2 and len(scripts["cand"].calls) - calls[1] == 2
    first_ids = pd.read_parquet(first.out / "records.parquet").item_id
    second_ids = pd.read_parquet(second.out / "records.parquet").item_id
    assert set(first_ids) < set(second_ids)  # the same sequence, continued
    assert second.run.candidates[0].chunk_passes["long"][:2] == first.run.candidates[0].chunk_passes["long"]


def test_precision_without_a_budget_and_the_noise_floor(scripts, long_file, tmp_path) -> None:
    scripts["base"] = picker(None)
    scripts["bad"] = picker(3)
    result = run(long_file, tmp_path, "p", SequentialPlan(precision=8, chunk=25), "mock:bad")
    state = result.summary["mock:bad"]["long"].sequential
    assert state is not None and state.decision == "precise"
    assert (state.interval[1] - state.interval[0]) / 2 <= 0.08 and state.n < N_ITEMS
    scripts["same"] = picker(None)
    floored = run(long_file, tmp_path, "f", SequentialPlan(precision=3, chunk=50), "mock:bad", "mock:same",
                  noise_floor=NoiseFloor(1))  # fmt: skip
    assert floored.run.noise_floor is not None
    floor_state = floored.run.noise_floor.summary["long"].sequential
    assert floor_state is not None and floor_state.decision == "precise" and floor_state.alpha == 0.025
    bad = floored.summary["mock:bad"]["long"].sequential
    assert bad is not None and bad.decision == "above" and bad.interval[0] > floor_state.interval[1]
    assert bad.alpha == 0.025
    same = floored.summary["mock:same"]["long"]
    assert same.sequential is not None and same.sequential.decision == "within floor"
    # the tables' "vs floor" column and the overview's ≈ say what the run decided, not a fixed-n Wilson check
    floor = floored.run.noise_floor.summary["long"]
    assert indistinguishable(same, floor) is True
    assert indistinguishable(floored.summary["mock:bad"]["long"], floor) is False
    cells = floor_cells(same, floor)
    assert cells[1] == "≈ floor" and f"{floor_state.interval[1] * 100:.1f}" in cells[0]


def test_one_question_and_good_settings(scripts, long_file, tmp_path) -> None:
    scripts["base"] = picker(None)
    scripts["cand"] = picker(4)
    with pytest.raises(FlipscopeError, match="one question"):
        run(long_file, tmp_path, "x", SequentialPlan(flip_budget=5), "mock:cand", noise_floor=NoiseFloor(1))
    with pytest.raises(FlipscopeError, match="flip budget"):
        run(long_file, tmp_path, "y", SequentialPlan(flip_budget=150), "mock:cand")
    with pytest.raises(FlipscopeError, match="chunk"):
        run(long_file, tmp_path, "z", SequentialPlan(chunk=0), "mock:cand")
    assert scripts["base"].calls == []  # refused before anything ran


def test_a_free_form_task_runs_sequentially(scripts, tmp_path) -> None:
    from tests.test_gsm8k_pipeline import _question, _row, _wheel

    targets = _wheel()

    def answer(wrong_every: int) -> object:
        def text(prompt: str) -> str:
            q = _question(prompt)
            n = int(q.split()[1].rstrip(":"))
            return f" The answer is {int(targets[q]) + (n % wrong_every == 0)}."

        return text

    scripts["b"] = Script(lambda i, r: (-1.0,), rows=lambda i, o: _row(0.0), answer=answer(10**9))
    scripts["c"] = Script(lambda i, r: (-1.5,), rows=lambda i, o: _row(0.2), answer=answer(2))  # half flip
    result = compare("mock:b", ["mock:c"], tasks=["gsm8k"], out=tmp_path / "g", cache_dir=tmp_path / "cache",
                     sequential=SequentialPlan(flip_budget=20, chunk=16))  # fmt: skip
    s = result.summary["mock:c"]["gsm8k"]
    assert s.sequential is not None and s.sequential.decision == "above" and s.sequential.n == s.n < 1319
    assert s.n % 16 == 0 and s.free is not None and s.free.n == s.n
    assert sum(scripts["b"].generated) == s.n  # the baseline generated only what the candidate needed


def test_the_command_line(scripts, long_file, tmp_path, monkeypatch, capsys) -> None:
    from tests.test_cli import run_cli

    scripts["base"] = picker(None)
    scripts["bad"] = picker(4)
    code, out, err = run_cli(monkeypatch, capsys, "compare", "mock:base", "mock:bad", "--tasks", str(long_file),
                             "--flip-budget", "8", "--chunk", "40", "--out", str(tmp_path / "cli"),
                             "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert code == 0, err
    state = load_run(tmp_path / "cli").summary["mock:bad"]["long"].sequential
    assert state is not None and f"above · n={state.n}/{N_ITEMS}" in out
    code, _, err = run_cli(monkeypatch, capsys, "compare", "mock:base", "mock:bad", "--tasks", str(long_file),
                           "--chunk", "0", "--alpha", "2")  # fmt: skip
    assert code == 2 and "--alpha, --chunk apply to sequential runs only" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "compare", "mock:base", "mock:bad", "--tasks", str(long_file),
                           "--sequential", "--chunk", "0")  # fmt: skip
    assert code != 0 and "a chunk holds at least 1 item" in err and "Traceback" not in err
