"""``kld --ray``: the baseline's store built by a Ray actor and the candidates measured by others, on a real
two-node cluster started on this machine, give the run a local ``kld`` gives, bit for bit — the store's tail samples
too, whose generator runs across windows; an actor killed mid-build is restarted and draws the same samples; a
candidate that cannot load there is one clear error, the store kept."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flipscope import kld
from flipscope.errors import FlipscopeError
from flipscope.passes import kld as kld_passes
from flipscope.passes import ray_kld
from flipscope.passes.ray_cluster import RayPlacement
from tests.test_cli import run_cli

ray = pytest.importorskip("ray")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text("The planets circle the sun. Paris is the capital of France. Rivers run to the sea. " * 40)
    return path


@pytest.fixture
def small_stretches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kld_passes, "PART_WINDOWS", 2)  # 5 windows: stretches of 2, 2, 1


def positions(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "positions.parquet")


def run_json(out: Path) -> dict[str, Any]:
    run = json.loads((out / "run.json").read_text())
    return {k: run[k] for k in ("summary", "per_window", "most_divergent", "candidates", "notes")}


def store_arrays(cache: Path) -> dict[str, np.ndarray]:
    [header] = [p for p in cache.glob("*/header.json")]  # the one baseline store
    assert json.loads(header.read_text())["complete"]
    return {p.name: np.load(p) for p in sorted(header.parent.glob("*.npy")) if not p.name.startswith("rng-")}


def no_model_here(*_: Any, **__: Any) -> None:
    raise AssertionError("the driver loaded a model: every one should have run on Ray")


@pytest.mark.parametrize("store", ["compact", "full"])
def test_a_run_on_ray_equals_a_local_run_and_the_driver_loads_no_model(
    store, cluster, small_stretches, tiny_llama, corpus, tmp_path, monkeypatch
) -> None:
    base, cands = f"hf:{tiny_llama}", ["+rtn:w4g16", "+noise:0.05"]
    common: dict[str, Any] = {"corpus": str(corpus), "ctx": 64, "max_windows": 5, "device": "cpu", "store": store,
                              "topk": 8, "tail_samples": 4}  # fmt: skip
    local = kld(base, cands, out=tmp_path / "local", cache_dir=tmp_path / "c1", **common)
    monkeypatch.setattr(kld_passes, "load_backend", no_model_here)
    placement = RayPlacement(address=cluster.address, replicas=2)
    on_ray = kld(base, cands, out=tmp_path / "ray", cache_dir=tmp_path / "c2", ray=placement, **common)
    assert len(positions(local.out)) == 2 * 5 * 31
    pd.testing.assert_frame_equal(positions(local.out), positions(on_ray.out), check_exact=True)
    assert run_json(local.out) == run_json(on_ray.out)
    made_here, made_there = store_arrays(tmp_path / "c1"), store_arrays(tmp_path / "c2")
    assert made_here.keys() == made_there.keys() and ("sample_ids.npy" in made_here) == (store == "compact")
    for name, array in made_here.items():
        assert np.array_equal(array, made_there[name]), name
    stretches = sorted(p.name for p in (tmp_path / "c2" / "candidates").rglob("*.npz"))
    assert stretches == sorted(p.name for p in (tmp_path / "c1" / "candidates").rglob("*.npz"))
    again = kld(base, cands, out=tmp_path / "again", cache_dir=tmp_path / "c2", ray=placement, **common)
    pd.testing.assert_frame_equal(positions(local.out), positions(again.out), check_exact=True)  # all found stored


def test_the_baseline_actor_killed_mid_build_draws_the_same_samples(
    cluster, small_stretches, tiny_llama, corpus, tmp_path, monkeypatch
) -> None:
    base, cands = f"hf:{tiny_llama}", ["+rtn:w3g16"]
    common: dict[str, Any] = {"corpus": str(corpus), "ctx": 64, "max_windows": 5, "device": "cpu", "topk": 8}
    local = kld(base, cands, out=tmp_path / "local", cache_dir=tmp_path / "c1", **common)
    killed: list[int] = []
    next_stretch = ray_kld._KldRun.next_stretch

    def kill_it_building_the_second_stretch(self: Any) -> None:
        pid = None if killed or self.base is None else ray.get(self.base[0].pid.remote())
        next_stretch(self)
        if pid is not None and self.store.header.done_windows == 2:  # the second stretch sent, not back
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    monkeypatch.setattr(ray_kld._KldRun, "next_stretch", kill_it_building_the_second_stretch)
    on_ray = kld(base, cands, out=tmp_path / "ray", cache_dir=tmp_path / "c2",
                 ray=RayPlacement(address=cluster.address), **common)  # fmt: skip
    assert killed, "no actor was killed: the test did not test a fault"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # it really died
    pd.testing.assert_frame_equal(positions(local.out), positions(on_ray.out), check_exact=True)
    made_here, made_there = store_arrays(tmp_path / "c1"), store_arrays(tmp_path / "c2")
    for name, array in made_here.items():
        assert np.array_equal(array, made_there[name]), name


def test_a_candidate_that_cannot_load_is_one_clear_error_and_the_store_is_kept(
    cluster, tiny_llama, corpus, tmp_path, monkeypatch, capsys
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cache = tmp_path / "cache"
    monkeypatch.setenv("FLIPSCOPE_CACHE", str(cache))
    code, out, err = run_cli(monkeypatch, capsys, "kld", f"hf:{tiny_llama}", f"hf:{broken}", "--corpus",
                             str(corpus), "--ctx", "64", "--chunks", "3", "--device", "cpu", "--ray", cluster.address,
                             "--replicas", "1", "--ray-resources", "CPU=1")  # fmt: skip
    assert code != 0 and "Traceback" not in err + out
    assert f"hf:{broken}" in err and "Ray cluster" in err
    assert len(store_arrays(cache / "kld")) > 0  # the baseline's store, built on the cluster, is kept


def test_what_kld_cannot_do_on_ray_is_refused_before_any_model(cluster, tiny_llama, corpus, tmp_path) -> None:
    with pytest.raises(FlipscopeError, match="--store live"):
        kld(f"hf:{tiny_llama}", ["+rtn:w8"], corpus=str(corpus), store="live", ray=RayPlacement(), out=tmp_path / "o")
    gpus = RayPlacement(address=cluster.address, resources={"num_gpus": 1})
    with pytest.raises(FlipscopeError, match="no node of the Ray cluster"):
        kld(f"hf:{tiny_llama}", ["+rtn:w8"], corpus=str(corpus), ray=gpus, cache_dir=tmp_path / "c", out=tmp_path / "o")
    assert not list((tmp_path / "c").rglob("header.json"))  # no store begun
