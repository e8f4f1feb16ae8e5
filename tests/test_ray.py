"""``compare --ray``: passes scored by Ray actors on a real two-node cluster started on this machine
(``ray.cluster_utils.Cluster``), stored by the driver, give the run a local ``compare`` gives, bit for bit; an actor
killed mid-run is restarted and its chunks redone; a model that cannot load there, or actors no node can hold, give
one clear error."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flipscope import compare
from flipscope.errors import FlipscopeError
from flipscope.passes import ray_passes, runner, stored
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.runs.noise import NoiseFloor
from tests.test_cli import run_cli

ray = pytest.importorskip("ray")


@pytest.fixture
def options_file(tmp_path: Path) -> Path:
    """Ten questions whose options differ in length (1–4 words), so rows per option differ."""
    return write_options(tmp_path / "colours.jsonl", 10)


def write_options(path: Path, n: int, shift: int = 0) -> Path:
    words = ["red", "green apple", "a blue sky today", "the sun", "moon and stars", "sea"]
    rows = [
        {"id": f"q{i}", "question": f"Which one is number {i + shift}?",
         "choices": [words[(i + k + shift) % 6] for k in range(4)], "answer": (i + shift) % 4}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def records(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "records.parquet")
    return frame.sort_values(["model", "task", "item_id"]).reset_index(drop=True)


def summaries(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text())["summary"]


def reused(out: Path) -> dict[str, Any]:
    """Each model's passes, and whether each was scored in this run or found in the cache."""
    run = json.loads((out / "run.json").read_text())
    models = [run["baseline"], *run["candidates"], *([run["noise_floor"]["model"]] if run["noise_floor"] else [])]
    return {m["spec"] + " " + m["role"]: (m["passes"], m["reused"]) for m in models}


def no_model_here(*_: Any, **__: Any) -> None:
    raise AssertionError("the driver loaded a model: every pass should have come from Ray")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored, "CHUNK_ITEMS", 3)  # 10 items: chunks of 3, 3, 3, 1


def test_records_equal_a_local_runs_and_the_driver_loads_no_model(
    cluster, actor_threads, small_chunks, tiny_llama, tiny_llama_other_vocab, options_file, tmp_path, monkeypatch
) -> None:
    base = f"hf:{tiny_llama}"
    cands = [f"hf:{tiny_llama}+rtn:w4g32", f"hf:{tiny_llama_other_vocab}"]
    second = write_options(tmp_path / "shapes.jsonl", 7, shift=3)  # a second task: 3 chunks (3, 3, 1)
    kwargs: dict[str, Any] = {"tasks": [str(options_file), str(second)], "device": "cpu", "batch_size": 2}
    floor = NoiseFloor(batch_size=1)
    local = compare(base, cands, out=tmp_path / "local", cache_dir=tmp_path / "c1", noise_floor=floor, **kwargs)
    monkeypatch.setattr(runner, "load_backend", no_model_here)
    placement = RayPlacement(address=cluster.address, replicas=2)
    on_ray = compare(base, cands, out=tmp_path / "ray", cache_dir=tmp_path / "c2", noise_floor=floor, ray=placement,
                     **kwargs)  # fmt: skip
    assert len(records(local.out)) == 4 * (10 + 7)  # baseline, two candidates, the floor
    pd.testing.assert_frame_equal(records(local.out), records(on_ray.out), check_exact=True)
    assert summaries(local.out) == summaries(on_ray.out)
    assert reused(local.out) == reused(on_ray.out)  # every pass scored in this run, none reported as reused
    assert on_ray.run.notes == local.run.notes  # the other tokenizer's note came back from its actor, in place
    assert any("different tokenizer" in n for n in on_ray.run.notes)
    assert not list((tmp_path / "c2").rglob("*.part*"))  # the chunks merged into passes, as a local run leaves them


def test_an_actor_killed_mid_run_is_restarted_and_its_chunks_redone(
    cluster, actor_threads, small_chunks, tiny_llama, options_file, tmp_path, monkeypatch
) -> None:
    base, cands = f"hf:{tiny_llama}", [f"hf:{tiny_llama}+rtn:w3g32"]
    kwargs: dict[str, Any] = {"tasks": [str(options_file)], "device": "cpu", "batch_size": 2}
    local = compare(base, cands, out=tmp_path / "local", cache_dir=tmp_path / "c1", **kwargs)
    killed: list[int] = []
    wait_one = ray_passes._Scheduler.wait_one

    def kill_a_busy_candidate_actor(self: Any) -> None:
        wait_one(self)
        busy = [a for m in self.models.values() if m.job.baseline for a in m.actors if a.busy == 2]
        if not killed and busy:  # a candidate's actor scoring one chunk, the next queued behind it
            killed.append(busy[0].pid)
            os.kill(busy[0].pid, signal.SIGKILL)

    monkeypatch.setattr(ray_passes._Scheduler, "wait_one", kill_a_busy_candidate_actor)
    on_ray = compare(base, cands, out=tmp_path / "ray", cache_dir=tmp_path / "c2",
                     ray=RayPlacement(address=cluster.address), **kwargs)  # fmt: skip
    assert killed, "no actor was killed: the test did not test a fault"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died
    pd.testing.assert_frame_equal(records(local.out), records(on_ray.out), check_exact=True)
    assert summaries(local.out) == summaries(on_ray.out)
    assert reused(local.out) == reused(on_ray.out)


def test_a_cached_candidate_gets_no_actor_and_is_reported_reused(
    cluster, actor_threads, small_chunks, tiny_llama, options_file, tmp_path, monkeypatch
) -> None:
    base, cached, fresh = f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w4g32", f"hf:{tiny_llama}+rtn:w3g32"
    kwargs: dict[str, Any] = {"tasks": [str(options_file)], "device": "cpu", "cache_dir": tmp_path / "c"}
    compare(base, [cached], out=tmp_path / "first", **kwargs)
    started: list[str] = []
    add_actors = ray_passes._Scheduler.add_actors

    def note_started(self: Any, model: Any) -> None:
        started.append(model.job.spec.label())
        add_actors(self, model)

    monkeypatch.setattr(ray_passes._Scheduler, "add_actors", note_started)
    on_ray = compare(base, [cached, fresh], out=tmp_path / "ray", ray=RayPlacement(address=cluster.address), **kwargs)
    assert started == [fresh]  # the baseline's and the cached candidate's passes were all stored
    flags = {spec: set(flag.values()) for spec, (_, flag) in reused(on_ray.out).items()}
    assert flags == {f"{base} baseline": {True}, f"{cached} candidate": {True}, f"{fresh} candidate": {False}}


def test_candidates_actors_wait_for_a_placed_baseline_actor_even_with_rows_ready(
    cluster, actor_threads, small_chunks, tiny_llama, options_file, tmp_path, monkeypatch
) -> None:
    """The baseline's pass of one task cached, of the other not: the candidate's chunks of the first are ready at
    once, yet its actor is asked for only once a baseline actor holds its place (on a cluster shared with other
    work, a candidate's actor taking the baseline's room would wait for it for ever)."""
    base, first, cand = f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w4g32", f"hf:{tiny_llama}+rtn:w3g32"
    other = write_options(tmp_path / "shapes.jsonl", 7, shift=3)
    both: dict[str, Any] = {"tasks": [str(options_file), str(other)], "device": "cpu"}
    compare(base, [first], tasks=[str(options_file)], device="cpu", out=tmp_path / "a", cache_dir=tmp_path / "c")
    local = compare(base, [cand], out=tmp_path / "local", cache_dir=tmp_path / "c1", **both)
    asked: list[tuple[str, bool]] = []
    add_actors = ray_passes._Scheduler.add_actors

    def note_asked(self: Any, model: Any) -> None:
        placed = any(a.pid is not None for m in self.models.values() if m.job.baseline is None for a in m.actors)
        asked.append((model.job.spec.label(), placed))
        add_actors(self, model)

    monkeypatch.setattr(ray_passes._Scheduler, "add_actors", note_asked)
    on_ray = compare(base, [cand], out=tmp_path / "ray", cache_dir=tmp_path / "c",
                     ray=RayPlacement(address=cluster.address), **both)  # fmt: skip
    assert asked == [(base, False), (cand, True)]
    pd.testing.assert_frame_equal(records(local.out), records(on_ray.out), check_exact=True)


def test_a_model_that_cannot_load_on_the_cluster_is_one_clear_error(
    cluster, tiny_llama, options_file, tmp_path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_llama / name).read_bytes())
    with pytest.raises(FlipscopeError) as err:
        compare(f"hf:{tiny_llama}", [f"hf:{broken}"], tasks=[str(options_file)], device="cpu", out=tmp_path / "r",
                cache_dir=tmp_path / "c", ray=RayPlacement(address=cluster.address))  # fmt: skip
    message = str(err.value)
    assert f"hf:{broken}" in message and "Ray cluster" in message and "\n" not in message
    assert len(list((tmp_path / "c").rglob("*.parquet"))) >= 1  # the baseline's pass, stored, is kept
    assert not (tmp_path / "r" / "run.json").exists()  # claimed (as a local run claims it), no run written


def test_actors_no_node_can_hold_are_refused_before_any_is_started(cluster, tiny_llama, options_file, tmp_path):
    with pytest.raises(FlipscopeError, match=r"no node of the Ray cluster .*\(GPU=1, CPU=1\)"):
        compare(f"hf:{tiny_llama}", [f"hf:{tiny_llama}+rtn:w4"], tasks=[str(options_file)], out=tmp_path / "r",
                cache_dir=tmp_path / "c", ray=RayPlacement(address=cluster.address, resources={"num_gpus": 1}),
                device="cpu")  # fmt: skip


def test_resources_are_parsed_and_bad_ones_refused() -> None:
    parsed = RayPlacement.parse_resources("num_gpus=1, num_cpus=4,memory=8e9,A100=0.5")
    assert parsed == {"num_gpus": 1.0, "num_cpus": 4.0, "memory": 8e9, "A100": 0.5}
    placement = RayPlacement(resources=parsed)
    assert placement.actor_options() == {"num_gpus": 1.0, "num_cpus": 4.0, "memory": 8e9, "resources": {"A100": 0.5}}
    assert RayPlacement.parse_resources("GPU=1,CPU=2") == {"num_gpus": 1.0, "num_cpus": 2.0}  # Ray's node names
    for bad in ("num_gpus", "num_gpus=x", "=1", "num_cpus=-1", "num_cpus=nan", "num_gpus=inf"):
        with pytest.raises(FlipscopeError, match="--ray-resources"):
            RayPlacement.parse_resources(bad)
    with pytest.raises(FlipscopeError, match="--replicas"):
        RayPlacement(replicas=0)


def test_ray_refuses_what_it_cannot_combine_with(tiny_llama, options_file, tmp_path) -> None:
    common: dict[str, Any] = {"tasks": [str(options_file)], "out": tmp_path / "r", "ray": RayPlacement()}
    with pytest.raises(FlipscopeError, match="--no-cache"):
        compare(f"hf:{tiny_llama}", [f"hf:{tiny_llama}+rtn:w4"], use_cache=False, **common)
    with pytest.raises(FlipscopeError, match="--shard"):
        compare(f"hf:{tiny_llama}", [f"hf:{tiny_llama}+rtn:w4"], shard="1/2", **common)
    on_gpus = {**common, "ray": RayPlacement(resources={"num_gpus": 1}), "tasks": ["gsm8k", str(options_file)]}
    with pytest.raises(FlipscopeError, match=r"gsm8k \(free-form\)"):
        compare(f"hf:{tiny_llama}", [f"hf:{tiny_llama}+rtn:w4"], **on_gpus)


def test_cli_ray_flags_reach_the_run(cluster, tiny_llama, options_file, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "r"
    code, _, err = run_cli(monkeypatch, capsys, "compare", f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w4g32", "--tasks",
                           str(options_file), "--device", "cpu", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                           "--ray", cluster.address, "--ray-resources", "num_cpus=1", "--replicas", "2")  # fmt: skip
    assert code == 0, err
    assert len(records(out)) == 2 * 10
    bad = ["--tasks", str(options_file), "--out", str(tmp_path / "x"), "--ray", "--ray-resources", "gpus"]
    code, _, err = run_cli(monkeypatch, capsys, "compare", f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w4", *bad)
    assert code != 0 and "--ray-resources" in err and "Traceback" not in err
