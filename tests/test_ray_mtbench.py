"""``mtbench --ray``: every model (the judge too) loaded in Ray actors on a real two-node cluster started on this
machine, answering in parallel, gives the run a local ``mtbench`` gives — answers, teacher-forced distances,
judgements; a candidate that cannot load there is one clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flipscope import mtbench
from flipscope.errors import FlipscopeError
from flipscope.passes import stored
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.runs import mtbench_session
from flipscope.runs.mtbench_session import MTBenchSettings
from tests.mtbench_data import write_mtbench
from tests.test_cli import run_cli

ray = pytest.importorskip("ray")


def frames(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("answers", "judgements")}


def run_json(out: Path) -> dict[str, Any]:
    run = json.loads((out / "run.json").read_text())
    return {k: v for k, v in run.items() if k != "created"}


def no_model_here(*_: Any, **__: Any) -> None:
    raise AssertionError("the driver loaded a model: every one should have loaded on Ray")


def test_a_run_on_ray_equals_a_local_run_and_the_driver_loads_no_model(
    cluster, actor_threads, tiny_llama, tmp_path, monkeypatch
):
    """FastChat's temperatures: writing and roleplay (0.7) sampled in calls of 4 questions, batches of 2 (one random
    stream across a call), the other categories' greedy answers alike; three models and the judge at once."""
    monkeypatch.setattr(stored, "CHUNK_ITEMS", 5)  # 32 teacher-forced answers: chunks of 5 sent apart
    data = write_mtbench(tmp_path / "data", per_category=2)  # 16 questions, two turns each
    base, cands = f"hf:{tiny_llama}", ["+rtn:w4g16", "+noise:0.05"]
    common: dict[str, Any] = {"data": str(data), "max_new_tokens": 6, "judge": f"hf:{tiny_llama}",
                              "judge_max_tokens": 4, "device": "cpu", "batch_size": 2}  # fmt: skip
    local = mtbench(base, cands, MTBenchSettings(**common, cache_dir=str(tmp_path / "c1")), out=tmp_path / "local")
    monkeypatch.setattr(mtbench_session, "load_backend", no_model_here)
    placement = RayPlacement(address=cluster.address)
    settings = MTBenchSettings(**common, cache_dir=str(tmp_path / "c2"), ray=placement)
    on_ray = mtbench(base, cands, settings, out=tmp_path / "ray")
    here, there = frames(local.out), frames(on_ray.out)
    assert len(here["answers"]) == 3 * 16 * 2 and len(here["judgements"]) > 0
    for name, frame in here.items():
        pd.testing.assert_frame_equal(frame, there[name], check_exact=True)
    assert run_json(local.out) == run_json(on_ray.out)
    assert local.run.summary["distances"][f"{base}+rtn:w4g16"]["all"]["measured"] > 0  # teacher-forced, on Ray


@pytest.mark.parametrize("broken_one", ["baseline", "candidate"])
def test_a_model_that_cannot_load_is_one_clear_error(broken_one, cluster, tiny_llama, tmp_path, monkeypatch, capsys):
    """The other models' threads end (their actors given back) and the command returns: no hang."""
    data = write_mtbench(tmp_path / "data", per_category=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    models = [f"hf:{broken}", f"hf:{tiny_llama}"] if broken_one == "baseline" else [f"hf:{tiny_llama}", f"hf:{broken}"]
    code, out, err = run_cli(monkeypatch, capsys, "mtbench", *models, f"hf:{tiny_llama}+rtn:w4g16", "--data",
                             str(data), "--max-new-tokens", "4", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
                             "--out", str(tmp_path / "run"), "--ray", cluster.address)  # fmt: skip
    assert code != 0 and "Traceback" not in err + out
    assert f"hf:{broken}" in err and "Ray cluster" in err
    assert not (tmp_path / "run" / "run.json").exists()


def test_what_mtbench_cannot_do_on_ray_is_refused_before_any_model(cluster, tiny_llama, tmp_path) -> None:
    data = str(write_mtbench(tmp_path / "data", per_category=1))
    two = MTBenchSettings(data=data, ray=RayPlacement(address=cluster.address, replicas=2))
    with pytest.raises(FlipscopeError, match="--replicas"):
        mtbench(f"hf:{tiny_llama}", ["+rtn:w8"], two, out=tmp_path / "a")
    gpus = MTBenchSettings(data=data, ray=RayPlacement(address=cluster.address, resources={"num_gpus": 1}))
    with pytest.raises(FlipscopeError, match="no node of the Ray cluster"):
        mtbench(f"hf:{tiny_llama}", ["+rtn:w8"], gpus, out=tmp_path / "b")
