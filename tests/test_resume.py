"""A scoring pass stored chunk by chunk: the merged pass equals one scored in one go (baseline rows, tail draws,
candidate token KL — full rows and a server's top-k), and a comparison killed with SIGKILL at random points
resumes from its stored chunks and gives records equal to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flipscope import _stored_pass, compare
from tests.conftest import Script


def _run(out: Path, cache: Path, spec_base: str, spec_cand: str, task: Path, **kw: object) -> pd.DataFrame:
    compare(spec_base, [spec_cand], tasks=[str(task)], out=out, cache_dir=cache, **kw)  # type: ignore[arg-type]
    return pd.read_parquet(out / "records.parquet")


def _script(seed: int, values: tuple[float, ...], topk: int) -> Script:
    """A mock whose rows depend on the question's text (as a real model's do), not on its place in a call."""
    seen: list[str] = []

    def logprobs(i: int, request: object) -> tuple[float, ...]:
        seen.append(request.prompt)  # type: ignore[attr-defined]
        return values

    def rows(i: int, o: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(seen[-1].encode()), o])
        logits = rng.normal(size=(3, 24))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)  # [T, V]

    return Script(logprobs, rows=rows, vocab=24, topk=topk)


@pytest.mark.parametrize("topk", [0, 6], ids=["full rows", "server top-k"])
def test_chunked_pass_equals_one_pass(
    scripts: dict[str, Script], mc_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topk: int
) -> None:
    scripts["b"] = _script(1, (-1.0, -2.0, -3.0, -4.0), topk)
    scripts["c"] = _script(2, (-2.0, -1.0, -3.0, -4.0), topk)
    whole = _run(tmp_path / "a", tmp_path / "ca", "mock:b", "mock:c", mc_file)
    monkeypatch.setattr(_stored_pass, "CHUNK_ITEMS", 5)  # 12 items: chunks of 5, 5, 2
    chunked = _run(tmp_path / "b", tmp_path / "cb", "mock:b", "mock:c", mc_file)
    pd.testing.assert_frame_equal(whole, chunked)
    assert chunked["token_kl"].notna().sum() == 12
    assert not list((tmp_path / "cb").glob("*.part0*"))  # the chunks are merged and deleted


DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from tests.conftest import SCRIPTS, Script
import numpy as np
import flipscope
from flipscope import _stored_pass

_stored_pass.CHUNK_ITEMS = 8

import zlib

def script(seed, values):
    seen = []
    def logprobs(i, r):
        time.sleep(0.05)
        seen.append(r.prompt)
        return values
    def rows(i, o):
        rng = np.random.default_rng([seed, zlib.crc32(seen[-1].encode()), o])
        logits = rng.normal(size=(2, 16))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    return Script(logprobs, rows=rows)

SCRIPTS["b"] = script(1, (-1.0, -2.0, -3.0, -4.0))
SCRIPTS["c"] = script(2, (-2.0, -1.0, -3.0, -4.0))
SCRIPTS["d"] = script(3, (-1.0, -3.0, -2.0, -4.0))
flipscope.compare("mock:b", ["mock:c", "mock:d"], tasks=[{task!r}], out={out!r}, cache_dir={cache!r})
"""


def test_compare_killed_at_random_points_resumes_to_the_same_records(tmp_path: Path) -> None:
    import json

    task = tmp_path / "t.jsonl"
    task.write_text(
        "".join(
            json.dumps({"question": f"q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4}) + "\n"
            for i in range(120)
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    tests = str(Path(__file__).resolve().parent.parent)

    def driver(name: str, cache: Path) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(DRIVER.format(tests=tests, task=str(task), out=str(tmp_path / name), cache=str(cache)))
        return path

    subprocess.run([sys.executable, str(driver("whole", tmp_path / "cache-whole"))], check=True, env=env, timeout=300)
    script = driver("killed", tmp_path / "cache")
    rng = random.Random(7)
    kills = 0
    while True:
        proc = subprocess.Popen([sys.executable, str(script)], env=env)
        try:
            # killed at a random moment 12 times (importing takes ~1 s; the three passes ~6 s each), then let finish
            proc.wait(timeout=rng.uniform(0.8, 2.5) if kills < 12 else 600)
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 10 and (tmp_path / "killed" / "run.json").exists()
    a = pd.read_parquet(tmp_path / "killed" / "records.parquet")
    b = pd.read_parquet(tmp_path / "whole" / "records.parquet")
    assert len(a) == 3 * 120 and not a.duplicated(["model", "item_id"]).any()
    pd.testing.assert_frame_equal(a, b)


def test_the_same_inputs_give_identical_records(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    """Determinism: two runs of the same comparison, nothing cached, on the same machine."""
    runs = [
        _run(tmp_path / f"r{i}", tmp_path / f"c{i}", f"hf:{tiny_llama}", "+rtn:w4g16", mc_file, batch_size=4)
        for i in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert runs[0][runs[0].role == "candidate"]["token_kl"].notna().all()


KLD_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import flipscope
flipscope.kld("hf:{model}", ["+rtn:w4g16"], corpus={corpus!r}, ctx=32, max_windows=600, topk=8, tail_samples=4,
              out={out!r}, cache_dir={cache!r}, device="cpu")
"""


def test_kld_killed_while_building_its_baseline_store_resumes_to_the_same_numbers(
    tiny_llama: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(f"The planet number {i} circles the sun every {i * 7 % 13} years." for i in range(1500)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    tests = str(Path(__file__).resolve().parent.parent)

    def driver(name: str, cache: Path) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(
            KLD_DRIVER.format(
                tests=tests, model=tiny_llama, corpus=str(corpus), out=str(tmp_path / name), cache=str(cache)
            )
        )
        return path

    subprocess.run([sys.executable, str(driver("whole", tmp_path / "cache-whole"))], check=True, env=env, timeout=300)
    script, rng, kills, points = driver("killed", tmp_path / "cache"), random.Random(11), 0, []

    def done() -> int:  # windows the stored baseline has checkpointed
        try:
            return int(json.loads(next((tmp_path / "cache").glob("*/header.json")).read_text())["done_windows"])
        except (StopIteration, ValueError, KeyError):
            return 0

    while True:
        proc = subprocess.Popen([sys.executable, str(script)], env=env)
        if kills >= 10:
            assert proc.wait(timeout=600) == 0
            break
        start = done()
        while proc.poll() is None and done() <= start:  # until this run's build is under way
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # a few windows further: at least 10 kills before the build ends
        if proc.poll() is not None:
            break  # it finished first
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        points.append(done())
    assert kills >= 10 and len(set(points)) >= 5, points  # killed at many points inside the store's build
    a = pd.read_parquet(tmp_path / "killed" / "positions.parquet")
    b = pd.read_parquet(tmp_path / "whole" / "positions.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_kld_killed_while_measuring_a_candidate_resumes_to_the_same_numbers(tiny_llama: Path, tmp_path: Path) -> None:
    """The baseline store is ready; the candidate's columns are stored in stretches as they are computed, and a run
    killed between (or while writing) them continues after the last whole stretch."""
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(f"The planet number {i} circles the sun every {i * 7 % 13} years." for i in range(1500)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    tests = str(Path(__file__).resolve().parent.parent)
    scripts = {}
    for name in ("whole", "killed"):
        scripts[name] = tmp_path / f"{name}.py"
        text = KLD_DRIVER.format(
            tests=tests, model=tiny_llama, corpus=str(corpus), out=str(tmp_path / name), cache=str(tmp_path / "cache")
        )
        scripts[name].write_text(text)
    subprocess.run([sys.executable, str(scripts["whole"])], check=True, env=env, timeout=300)
    parts = tmp_path / "cache" / "candidates"
    shutil.rmtree(parts)  # the baseline store stays: the candidate is measured again, and killed
    rng, kills, points = random.Random(5), 0, []

    def stretches() -> int:
        return len(list(parts.glob("*/*.npz")))

    while True:
        proc = subprocess.Popen([sys.executable, str(scripts["killed"])], env=env)
        if kills >= 10:
            assert proc.wait(timeout=600) == 0
            break
        start = stretches()
        while proc.poll() is None and stretches() <= start:  # until this run stored a stretch of its own
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        points.append(stretches())
    assert kills >= 10 and len(set(points)) >= 5, points
    a = pd.read_parquet(tmp_path / "killed" / "positions.parquet")
    b = pd.read_parquet(tmp_path / "whole" / "positions.parquet")
    pd.testing.assert_frame_equal(a, b)
