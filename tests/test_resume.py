"""A scoring pass stored chunk by chunk: the merged pass equals one scored in one go (baseline rows, tail draws,
candidate token KL — full rows and a server's top-k), and a comparison killed with SIGKILL at random points
resumes from its stored chunks and gives records equal to an uninterrupted run's. The mock vocabularies are larger
than the stored top-k, so tail tokens are drawn (checked non-empty) and the draws of every chunk are compared."""

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

from flipscope import compare
from flipscope.passes import stored as _stored_pass
from tests.conftest import Script


def _run(out: Path, cache: Path, spec_base: str, spec_cand: str, task: Path, **kw: object) -> pd.DataFrame:
    compare(spec_base, [spec_cand], tasks=[str(task)], out=out, cache_dir=cache, **kw)  # type: ignore[arg-type]
    return pd.read_parquet(out / "records.parquet")


def baseline_rows(cache: Path) -> dict[str, np.ndarray]:
    """The stored baseline pass's compact rows (top-k, rest, tail draws) in ``cache``: exactly one pass has them."""
    found = list(cache.rglob("rows.npz"))
    assert len(found) == 1, found
    with np.load(found[0]) as data:
        return {name: data[name] for name in data.files}


def assert_same_tail_draws(a: dict[str, np.ndarray], b: dict[str, np.ndarray], samples: int) -> None:
    """The two stored baselines hold the same rows, with ``samples`` tail tokens drawn at every position."""
    assert a["sample_ids"].shape == (len(a["rest"]), samples) and samples > 0
    assert (a["sample_ids"] >= 0).all() and np.isfinite(a["sample_logprobs"]).all()
    assert not (a["sample_ids"][:, :, None] == a["ids"][:, None, :]).any()  # drawn outside each row's top-k
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


#: The mocks' vocabulary, and the baseline's stored top-k and tail draws per answer token: a tail of 16 tokens.
VOCAB, TOPK, SAMPLES = 24, 8, 5


def _script(seed: int, values: tuple[float, ...], topk: int) -> Script:
    """A mock whose rows depend on the question's text (as a real model's do), not on its place in a call."""
    seen: list[str] = []

    def logprobs(i: int, request: object) -> tuple[float, ...]:
        seen.append(request.prompt)  # type: ignore[attr-defined]
        return values

    def rows(i: int, o: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(seen[-1].encode()), o])
        logits = rng.normal(size=(3, VOCAB))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)  # [T, V]

    return Script(logprobs, rows=rows, vocab=VOCAB, topk=topk)


@pytest.mark.parametrize("topk", [0, 6], ids=["full rows", "server top-k"])
def test_chunked_pass_equals_one_pass(
    scripts: dict[str, Script], mc_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, topk: int
) -> None:
    scripts["b"] = _script(1, (-1.0, -2.0, -3.0, -4.0), topk)
    scripts["c"] = _script(2, (-2.0, -1.0, -3.0, -4.0), topk)
    kw = {"topk": TOPK, "tail_samples": SAMPLES}
    whole = _run(tmp_path / "a", tmp_path / "ca", "mock:b", "mock:c", mc_file, **kw)
    monkeypatch.setattr(_stored_pass, "CHUNK_ITEMS", 5)  # 12 items: chunks of 5, 5, 2
    chunked = _run(tmp_path / "b", tmp_path / "cb", "mock:b", "mock:c", mc_file, **kw)
    pd.testing.assert_frame_equal(whole, chunked)
    assert chunked["token_kl"].notna().sum() == 12
    assert not list((tmp_path / "cb").rglob("*.part0*"))  # the chunks are merged and deleted
    if not topk:  # full rows: the tail draws of chunks 2 and 3 are those of the pass scored in one go
        assert_same_tail_draws(baseline_rows(tmp_path / "cb"), baseline_rows(tmp_path / "ca"), SAMPLES)


DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from tests.conftest import SCRIPTS, Script
import numpy as np
import flipscope
from flipscope.passes import stored as _stored_pass

_stored_pass.CHUNK_ITEMS = {chunk}

import zlib

def script(seed, values):
    seen = []
    def logprobs(i, r):
        time.sleep(0.05)
        seen.append(r.prompt)
        return values
    def rows(i, o):
        rng = np.random.default_rng([seed, zlib.crc32(seen[-1].encode()), o])
        logits = rng.normal(size=(2, 24))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    return Script(logprobs, rows=rows, vocab=24)

SCRIPTS["b"] = script(1, (-1.0, -2.0, -3.0, -4.0))
SCRIPTS["c"] = script(2, (-2.0, -1.0, -3.0, -4.0))
SCRIPTS["d"] = script(3, (-1.0, -3.0, -2.0, -4.0))
flipscope.compare("mock:b", ["mock:c", "mock:d"], tasks=[{task!r}], out={out!r}, cache_dir={cache!r},
                  topk=8, tail_samples=5)  # 24 tokens: 16 in the tail, 5 drawn per answer token
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

    def driver(name: str, cache: Path, chunk: int) -> Path:
        path = tmp_path / f"{name}.py"
        text = DRIVER.format(tests=tests, task=str(task), out=str(tmp_path / name), cache=str(cache), chunk=chunk)
        path.write_text(text)
        return path

    # the reference run scores each pass in one chunk; the killed one in chunks of 8 items
    subprocess.run([sys.executable, str(driver("whole", tmp_path / "cache-whole", 1000))], check=True, env=env,
                   timeout=300)  # fmt: skip
    script = driver("killed", tmp_path / "cache", 8)
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
    assert a["token_kl"].notna().sum() == 2 * 120
    # the baseline's 15 chunks of 8 items, some scored before a kill and some after: the draws of one whole pass
    assert_same_tail_draws(baseline_rows(tmp_path / "cache"), baseline_rows(tmp_path / "cache-whole"), 5)


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


def test_kld_stretches_cut_differently_by_two_runs_are_read_back_whole(tmp_path: Path) -> None:
    """A `kld --ray` run cut windows 0–8 and 16–24 (then died); a local rerun went on from 8 in stretches of 16: the
    stretches read back are 0–8, 8–24, 24–40 in order — 16–24, inside 8–24, skipped, not taken for a gap."""
    from flipscope.store.kld_parts import PositionParts

    parts = PositionParts(tmp_path / "parts")
    for first, end in ((0, 8), (16, 24), (8, 24), (24, 40)):
        parts.save(first, end, {"window": np.arange(first, end, dtype=np.int32)})
    done, stretches = parts.resume()
    assert done == 40
    assert np.array_equal(np.concatenate([s["window"] for s in stretches]), np.arange(40))
