"""``compare --shard``: the parts of a comparison, run apart (in this process, or in processes started together as an
array's jobs are) into one pass cache, assemble into the run that one ``compare`` makes, loading no model."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pandas as pd
import pytest

from flipscope import Shard, compare
from flipscope.errors import FlipscopeError
from flipscope.metrics.sequential import SequentialPlan
from flipscope.runs.noise import NoiseFloor
from flipscope.tasks import ScoreRequest
from tests.conftest import SCRIPTS, Script
from tests.test_cli import run_cli

CANDS = ["mock:c0", "mock:c1", "mock:c2"]


def picker(wrong_every: int | None) -> Script:
    """Right on every item but those whose number is a multiple of ``wrong_every`` (by the item's text)."""

    def logprobs(_: int, request: ScoreRequest) -> tuple[float, ...]:
        found = re.search(r"Item (\d+):", request.prompt)
        assert found is not None
        item = int(found.group(1))
        pick = (item + (wrong_every is not None and item % wrong_every == 0)) % 3
        return tuple(-1.0 - 0.01 * item * (o != pick) - 2.0 * (o != pick) for o in range(len(request.continuations)))

    return Script(logprobs)


def fill(scripts: dict[str, Script]) -> None:
    scripts["base"] = picker(None)
    for k, name in enumerate(CANDS):
        scripts[name.removeprefix("mock:")] = picker(3 + k)


def task_file(folder: Path) -> Path:
    rows = [{"id": f"q{i}", "question": f"Item {i}: which?", "choices": ["a", "bb", "ccc"], "answer": i % 3}
            for i in range(60)]  # fmt: skip
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def records(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "records.parquet")
    return frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)


def run(tmp_path: Path, out: str, cache: str, shard: Shard | str | None = None, **fields: object):
    return compare("mock:base", CANDS, tasks=[str(task_file(tmp_path))], out=tmp_path / out,
                   cache_dir=tmp_path / cache, shard=shard, **fields)  # fmt: skip


def test_parts_cover_every_candidate_once_and_the_floor_once() -> None:
    assert (Shard.parse("1/4"), Shard.parse(" 0 / 1 "), str(Shard.parse("baseline"))) == (
        Shard(1, 4), Shard(0, 1), "baseline")  # fmt: skip
    for bad in ("2/2", "0/0", "a/b", "-1/3", "1", "1/2/3"):
        with pytest.raises(FlipscopeError, match="--shard"):
            Shard.parse(bad)
    for m in (1, 2, 7):
        for n in (1, 2, 3, 5, 9):
            parts = [Shard(i, n) for i in range(n)]
            assert sorted(c for p in parts for c in p.candidates(list(range(m)))) == list(range(m))
            assert sum(p.runs_floor(m, sequential=False) for p in parts) == 1
            assert all(p.runs_floor(m, sequential=True) for p in parts)
    assert Shard.parse("baseline").candidates([1, 2]) == []
    assert not Shard.parse("baseline").runs_floor(2, sequential=False)
    assert Shard.parse("baseline").runs_floor(2, sequential=True)  # the floor once, ahead of the array
    with pytest.raises(FlipscopeError, match="shard 5/3"):
        Shard(5, 3)


def test_shards_in_one_cache_assemble_the_run_one_compare_makes(scripts, tmp_path) -> None:
    fill(scripts)
    floor = NoiseFloor(4, None)
    whole = run(tmp_path, "whole", "cache-a", noise_floor=floor)
    parts = [run(tmp_path, f"part{s}", "cache-b", Shard.parse(s), noise_floor=floor) for s in ("baseline", "0/2",
                                                                                               "1/2")]  # fmt: skip
    assert [list(p.summary) for p in parts] == [[], ["mock:c0", "mock:c2"], ["mock:c1"]]
    assert [p.run.noise_floor is not None for p in parts] == [False, False, True]  # the part after the last candidate
    assert any("shard 0/2" in n and "without --shard" in n for n in parts[1].run.notes)
    calls = {name: len(s.calls) for name, s in scripts.items()}
    assembled = run(tmp_path, "assembled", "cache-b", noise_floor=floor)
    assert {name: len(s.calls) for name, s in scripts.items()} == calls  # every pass read from the cache
    pd.testing.assert_frame_equal(records(assembled.out), records(whole.out))
    assert assembled.summary == whole.summary and not any("shard" in n for n in assembled.run.notes)
    assert assembled.run.noise_floor is not None and assembled.run.noise_floor.summary == whole.run.noise_floor.summary


def test_sequential_shards_each_run_the_floor_and_assemble(scripts, tmp_path) -> None:
    fill(scripts)
    seq = {"sequential": SequentialPlan(chunk=20), "noise_floor": NoiseFloor(4, None), "limit": 60}
    whole = run(tmp_path, "whole", "cache-a", **seq)
    first = run(tmp_path, "part-base", "cache-b", Shard.parse("baseline"), **seq)
    assert first.summary == {} and first.run.noise_floor is not None  # the floor, once, before the array
    for s in ("0/2", "1/2"):
        part = run(tmp_path, f"part{s[0]}", "cache-b", Shard.parse(s), **seq)
        assert part.run.noise_floor is not None  # each part's decisions are against the floor's interval
    calls = {name: len(s.calls) for name, s in scripts.items()}
    assembled = run(tmp_path, "assembled", "cache-b", **seq)
    assert {name: len(s.calls) for name, s in scripts.items()} == calls
    pd.testing.assert_frame_equal(records(assembled.out), records(whole.out))
    assert assembled.summary == whole.summary
    del seq["noise_floor"]
    with pytest.raises(FlipscopeError, match="nothing to run in a sequential run without --noise-floor"):
        run(tmp_path, "base-only", "cache-b", Shard.parse("baseline"), **seq)
    with pytest.raises(FlipscopeError, match="--no-cache"):
        run(tmp_path, "fresh", "cache-b", "1/2", use_cache=False)  # the API also takes the text


def _job(folder: str, shard: str) -> None:
    """One array job, in a process of its own: the same scripted models, one part, the shared cache."""
    fill(SCRIPTS)
    run(Path(folder), f"job-{shard.replace('/', '-')}", "shared", Shard.parse(shard))


def test_jobs_started_together_share_one_cache(scripts, tmp_path) -> None:
    """Three processes at once (the baseline's part among them): each may score the baseline, but the cache keeps
    the first one stored and every part reads that one; the assembling run then scores nothing."""
    fill(scripts)
    ctx = multiprocessing.get_context("spawn")
    jobs = [ctx.Process(target=_job, args=(str(tmp_path), s)) for s in ("baseline", "0/2", "1/2")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assembled = run(tmp_path, "assembled", "shared")
    assert all(s.calls == [] for s in scripts.values())  # nothing scored here: every pass came from the jobs
    whole = run(tmp_path, "whole", "fresh")
    pd.testing.assert_frame_equal(records(assembled.out), records(whole.out))


def test_cli_shard_errors_are_one_line(scripts, tmp_path, monkeypatch, capsys) -> None:
    fill(scripts)
    args = ["compare", "mock:base", *CANDS, "--tasks", str(task_file(tmp_path)), "--cache-dir", str(tmp_path / "c")]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--shard", "3/2")
    assert code == 2 and "--shard '3/2'" in err and "Traceback" not in err
    code, out, err = run_cli(monkeypatch, capsys, *args, "--shard", "1/2", "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert list(json.loads((tmp_path / "p" / "run.json").read_text())["summary"]) == ["mock:c1"]
    assert "shard 1/2" in out


def test_a_gpu_sweep_assembles_on_a_node_without_one(scripts, tmp_path) -> None:
    """Jobs that named --device cuda stored passes keyed by it; the assembling job on a CPU node names it too and
    reads them (an explicit device is not resolved; `auto` there would be cpu, another key, and score it all)."""
    fill(scripts)
    for s in ("baseline", "0/1"):
        run(tmp_path, f"gpu-{s[0]}", "cache", Shard.parse(s), device="cuda")
    calls = {name: len(s.calls) for name, s in scripts.items()}
    run(tmp_path, "assembled", "cache", device="cuda")
    assert {name: len(s.calls) for name, s in scripts.items()} == calls
    run(tmp_path, "auto", "cache")  # `auto` resolves to cpu here: a different key, so it scores again
    assert {name: len(s.calls) for name, s in scripts.items()} != calls
