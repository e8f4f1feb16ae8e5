"""Property-based: generated malformed task files, model specs, corpora, run directories, MT-Bench files, judge
outputs and server replies (alone, and mid-run through a whole comparison) each give a clean FlipscopeError (or,
where the input happens to be valid, a valid result) — never another exception, never a number computed from bad
data; through the CLI, the error `flipscope` prints as one line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
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


@FAST
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode), ctx=st.integers(2, 64))
def test_malformed_corpora(data: bytes, ctx: int) -> None:
    """Any bytes as a corpus file: text it can window, or a clean error naming the file — never a traceback."""
    from flipscope.tasks.corpus import load_corpus, make_windows

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corpus.txt"
        path.write_bytes(data)
        try:
            corpus = load_corpus(str(path))
            ids = [ord(c) % 97 for c in corpus.text]  # a character tokenizer
            windows = make_windows(ids, ctx, bos_id=None)
        except FlipscopeError as exc:
            assert "\n" not in exc.one_line()
            assert "corpus" in exc.one_line() or "window" in exc.one_line()
            return
        assert windows and all(len(w.ids) == ctx and 0 <= w.first < ctx - 1 for w in windows)


REPLY_PATHS = st.sampled_from(
    [
        ["choices"],
        ["choices", 0],
        ["choices", 0, "logprobs"],
        ["choices", 0, "logprobs", "tokens"],
        ["choices", 0, "logprobs", "token_logprobs"],
        ["choices", 0, "logprobs", "token_logprobs", -1],
        ["choices", 0, "logprobs", "text_offset"],
        ["choices", 0, "logprobs", "text_offset", -1],
        ["choices", 0, "logprobs", "top_logprobs", -1],
        ["choices", 0, "logprobs", "top_logprobs", -1, " x"],
        ["choices", 0, "text"],
    ]
)


@pytest.fixture(scope="module")
def fake_server() -> Any:
    from fake_server import FakeServer, serve

    fake = FakeServer()
    with serve(fake) as url:
        yield fake, url


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at=st.integers(0, 30),
    fault=st.tuples(REPLY_PATHS, json_values).map(lambda pv: "mutate:" + json.dumps(list(pv)))
    | st.text(max_size=40).map(lambda t: "raw:" + t),
)
def test_a_server_misbehaving_mid_run(fake_server: Any, at: int, fault: str) -> None:
    """A whole comparison against a server whose ``at``-th reply is malformed: a clean error and no run written,
    or (the reply was still usable) a run whose every number is finite."""
    import math

    from flipscope import compare

    fake, url = fake_server
    with tempfile.TemporaryDirectory() as folder:
        task = Path(folder) / "t.jsonl"
        task.write_text("".join(json.dumps({"question": f"Is {i} even?", "choices": ["yes", "no"],
                                            "answer": i % 2}) + "\n" for i in range(3)))  # fmt: skip
        fake.script = ["ok"] * at + [fault]
        spec = f"openai:{url}#{{}},retries=0,timeout=5,concurrency=1"
        try:
            result = compare(spec.format("base"), [spec.format("cand")], tasks=[str(task)],
                             out=Path(folder) / "run", cache_dir=Path(folder) / "cache")  # fmt: skip
        except FlipscopeError as exc:
            event(f"error: {exc.one_line()[:60]}")
            assert "\n" not in exc.one_line()
            assert not (Path(folder) / "run" / "run.json").exists()
            return
        finally:
            fake.script = []
        event("run written")
        for tasks in result.summary.values():
            for s in tasks.values():
                for value in (s.acc_baseline, s.acc_candidate, s.flips, s.choice_kl_mean, s.token_kl_mean):
                    assert value is None or math.isfinite(value)


class _BrokenImport:
    """A meta-path finder whose ``llama_cpp`` raises ``exc`` while it loads, as an installed llama-cpp-python whose
    shared library is missing or fails to load does."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        import importlib.util

        return importlib.util.spec_from_loader(name, self) if name == "llama_cpp" else None  # type: ignore[arg-type]

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        raise self.exc


def broken_llama_cpp(m: pytest.MonkeyPatch, exc: BaseException) -> None:
    import sys

    m.delitem(sys.modules, "llama_cpp", raising=False)
    m.setattr(sys, "meta_path", [_BrokenImport(exc), *sys.meta_path])


LOAD_FAILURES = st.builds(
    lambda kind, text: kind(text),
    st.sampled_from([FileNotFoundError, OSError, RuntimeError, ImportError]),
    st.sampled_from(["Shared library with base name 'llama' not found", "libllama.so: cannot open shared object file",
                     "undefined symbol: llama_backend_init"]) | st.text(max_size=60),
)  # fmt: skip


@FAST
@given(exc=LOAD_FAILURES)
def test_an_installed_but_unloadable_llama_cpp(exc: BaseException) -> None:
    """llama-cpp-python that imports with an error: one line naming the package, what failed and how to rebuild it."""
    from flipscope.models.gguf_file import require_llama_cpp

    with pytest.MonkeyPatch.context() as m:
        broken_llama_cpp(m, exc)
        with pytest.raises(FlipscopeError) as raised:
            require_llama_cpp()
    line = raised.value.one_line()
    assert "\n" not in line and "llama-cpp-python" in line and "cannot be loaded" in line
    assert type(exc).__name__ in line and raised.value.fix and "pip install --force-reinstall" in raised.value.fix


def test_a_gguf_spec_with_an_unloadable_llama_cpp_is_one_line(tmp_path: Path, mc_file: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    with pytest.MonkeyPatch.context() as m:
        broken_llama_cpp(m, FileNotFoundError("Shared library with base name 'llama' not found"))
        result = CliRunner().invoke(cli, ["compare", f"gguf:{model}", "+ggml:Q8_0", "--tasks", str(mc_file),
                                          "--out", str(tmp_path / "run")])  # fmt: skip
    # a FlipscopeError, which `flipscope` prints as one "error: … — fix" line (tests/test_cli.py)
    assert isinstance(result.exception, FlipscopeError), result.exception
    line = result.exception.one_line()
    assert "\n" not in line and "llama-cpp-python" in line and "Shared library" in line


mtbench_like = st.fixed_dictionaries(
    {"kind": st.sampled_from(["mtbench", "compare", "kld", "attribute", "MTBench"]) | json_values},
    optional={
        f: json_values
        for f in ("created", "questions", "baseline", "candidates", "settings", "schema_version", "summary")
    },
)


@FAST
@given(
    run_json=st.none()
    | st.binary(max_size=40)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mtbench_like.map(lambda v: json.dumps(v).encode())
)
def test_judge_on_a_folder_that_is_not_an_mtbench_run(run_json: bytes | None) -> None:
    """`flipscope judge` on any folder but an MT-Bench run's: one line naming the folder and what it expected."""
    with tempfile.TemporaryDirectory() as parent:
        folder = Path(parent) / "some run"
        folder.mkdir()
        if run_json is not None:
            (folder / "run.json").write_bytes(run_json)
        result = CliRunner().invoke(cli, ["judge", str(folder), "--judge", "mock:judge"])
    assert isinstance(result.exception, FlipscopeError), result.exception
    line = result.exception.one_line()
    assert "\n" not in line and str(folder) in line and "pydantic" not in line
    assert "MT-Bench run" in line


def test_judge_on_a_compare_run_says_what_it_is(stored_run: Path) -> None:
    result = CliRunner().invoke(cli, ["judge", str(stored_run), "--judge", "mock:judge"])
    assert isinstance(result.exception, FlipscopeError)
    line = result.exception.one_line()
    assert line.startswith(f"{stored_run} is not an MT-Bench run") and 'no "kind"' in line and '"mtbench"' in line
