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


@pytest.mark.parametrize(("greedy", "replicas"), [(False, 1), (True, 2)])
def test_a_run_on_ray_equals_a_local_run_and_the_driver_loads_no_model(
    greedy, replicas, cluster, tiny_llama, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(stored, "CHUNK_ITEMS", 5)  # 16 teacher-forced answers: chunks of 5, 5, 5, 1, sent apart
    data = write_mtbench(tmp_path / "data", per_category=1)  # 8 questions, two turns each
    base, cands = f"hf:{tiny_llama}", ["+rtn:w4g16", "+noise:0.05"]
    common: dict[str, Any] = {"data": str(data), "greedy": greedy, "max_new_tokens": 6, "judge": f"hf:{tiny_llama}",
                              "judge_max_tokens": 4, "device": "cpu", "batch_size": 2}  # fmt: skip
    local = mtbench(base, cands, MTBenchSettings(**common, cache_dir=str(tmp_path / "c1")), out=tmp_path / "local")
    monkeypatch.setattr(mtbench_session, "load_backend", no_model_here)
    placement = RayPlacement(address=cluster.address, replicas=replicas)
    settings = MTBenchSettings(**common, cache_dir=str(tmp_path / "c2"), ray=placement)
    on_ray = mtbench(base, cands, settings, out=tmp_path / "ray")
    here, there = frames(local.out), frames(on_ray.out)
    assert len(here["answers"]) == 3 * 8 * 2 and len(here["judgements"]) > 0
    for name, frame in here.items():
        pd.testing.assert_frame_equal(frame, there[name], check_exact=True)
    assert run_json(local.out) == run_json(on_ray.out)
    assert local.run.summary["distances"][f"{base}+rtn:w4g16"]["all"]["measured"] > 0  # teacher-forced, on Ray


def test_a_candidate_that_cannot_load_is_one_clear_error(cluster, tiny_llama, tmp_path, monkeypatch, capsys) -> None:
    data = write_mtbench(tmp_path / "data", per_category=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cache = tmp_path / "cache"
    code, out, err = run_cli(monkeypatch, capsys, "mtbench", f"hf:{tiny_llama}", f"hf:{broken}", "--data", str(data),
                             "--max-new-tokens", "4", "--device", "cpu", "--cache-dir", str(cache), "--out",
                             str(tmp_path / "run"), "--ray", cluster.address)  # fmt: skip
    assert code != 0 and "Traceback" not in err + out
    assert f"hf:{broken}" in err and "Ray cluster" in err
