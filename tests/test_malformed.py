"""Property-based: generated malformed task files, model specs, run directories, MT-Bench files, judge outputs
and server replies each give a clean FlipscopeError (or, where the input happens to be valid, a valid result) —
never another exception, never a number computed from bad data; through the CLI, the error `flipscope` prints as
one line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipscope.cli import cli
from flipscope.errors import FlipscopeError
from flipscope.judge import parse_pair, parse_rating
from flipscope.models import parse_spec
from flipscope.models.openai_server import generation_of
from flipscope.tasks import load_task

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["question", "choices", "answer", "options", "label", "subject", "id", "text", "x"])
rows = st.dictionaries(field_names, json_values, max_size=5)


@FAST
@given(
    lines=st.lists(st.one_of(rows.map(json.dumps), st.text(max_size=30)), min_size=1, max_size=6),
    suffix=st.sampled_from([".jsonl", ".csv"]),
)
def test_malformed_task_files(lines: list[str], suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"task{suffix}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            task = load_task(str(path))
        except FlipscopeError as exc:
            assert exc.one_line()
            return
        for item in task.items:  # accepted: then every item is a real question
            assert len(item.choices) >= 2 and 0 <= item.answer < len(item.choices)
            assert all(isinstance(c, str) for c in item.choices)


@FAST
@given(text=st.text(max_size=40) | st.from_regex(r"(hf|gguf|bundled|openai|mock|vllm)?:?[\w/+:,=.#@-]{0,30}"))
def test_malformed_specs(text: str) -> None:
    try:
        spec = parse_spec(text)
    except FlipscopeError as exc:
        assert exc.one_line()
        return
    assert spec.label()


@FAST
@given(text=st.text(max_size=200))
def test_judge_outputs_never_raise(text: str) -> None:
    rating = parse_rating(text)
    assert rating is None or 1.0 <= rating <= 10.0
    assert parse_pair(text) in (None, *"ABC")


@FAST
@given(
    reply=st.dictionaries(st.sampled_from(["choices", "usage", "id"]), json_values, max_size=3)
    | st.builds(
        lambda c, u: {"choices": c, "usage": u},
        st.lists(
            st.dictionaries(st.sampled_from(["text", "message", "finish_reason"]), json_values, max_size=3), max_size=2
        ),
        json_values,
    ),
    chat=st.booleans(),
)
def test_malformed_server_replies(reply: dict[str, Any], chat: bool) -> None:
    try:
        g = generation_of(reply, chat=chat, where="server http://127.0.0.1:1/v1")
    except FlipscopeError as exc:
        assert "server http://127.0.0.1:1/v1" in exc.one_line()
        return
    assert isinstance(g.text, str) and all(c is None or isinstance(c, int) for c in (g.prompt_tokens, g.new_tokens))


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory of a scripted comparison, to corrupt."""
    from flipscope import compare
    from tests.conftest import SCRIPTS, Script

    root = tmp_path_factory.mktemp("stored")
    task = root / "t.jsonl"
    task.write_text(
        "".join(json.dumps({"question": f"q{i}", "choices": ["a", "b"], "answer": i % 2}) + "\n" for i in range(6))
    )
    SCRIPTS["b"] = Script(lambda i, r: (-1.0, -2.0))
    SCRIPTS["c"] = Script(lambda i, r: (-2.0, -1.0))
    compare("mock:b", ["mock:c"], tasks=[str(task)], out=root / "run", cache_dir=root / "cache")
    return root / "run"


@FAST
@given(name=st.sampled_from(["run.json", "records.parquet"]), cut=st.floats(0, 1), junk=st.binary(max_size=16))
def test_corrupted_run_directories(stored_run: Path, name: str, cut: float, junk: bytes) -> None:
    import shutil

    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(stored_run, run)
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * cut)] + junk)
        result = CliRunner().invoke(cli, ["report", str(run)])
        if result.exit_code == 0:  # the corruption left a readable file: the same numbers as before
            assert result.output == CliRunner().invoke(cli, ["report", str(stored_run)]).output
            return
        # a FlipscopeError, which `flipscope` prints as one "error: … — fix" line (tests/test_cli.py)
        assert isinstance(result.exception, FlipscopeError), result.exception
        assert "\n" not in result.exception.one_line() and name in result.exception.one_line()


@FAST
@given(
    lines=st.lists(st.one_of(rows.map(json.dumps), st.text(max_size=20)), min_size=1, max_size=4),
    member=st.sampled_from(["mt_bench/question.jsonl", "mt_bench/reference_answer/gpt-4.jsonl", "judge_prompts.jsonl"]),
)
def test_malformed_mtbench_files(lines: list[str], member: str) -> None:
    from flipscope.tasks.mtbench import load_mtbench
    from mtbench_data import write_mtbench

    with tempfile.TemporaryDirectory() as folder:
        data = write_mtbench(Path(folder))
        (data / member).write_text("\n".join(lines) + "\n")
        with pytest.raises(FlipscopeError):
            load_mtbench(data)
