"""Cache entries are made once, by one process: a second process asking for the same entry waits and finds it
made; a failed or killed maker leaves no half-written entry."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from flipscope.plumbing.atomic import write_once


def _make(target: str, log: str) -> str:
    def make(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write("made\n")
        time.sleep(0.5)  # long enough for the other process to arrive while this one builds
        tmp.write_text("whole")

    return str(write_once(Path(target), make))


def test_two_processes_make_an_entry_once(tmp_path: Path) -> None:
    target, log = tmp_path / "cache" / "entry.bin", tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        got = pool.starmap(_make, [(str(target), str(log))] * 2)
    assert got == [str(target)] * 2 and target.read_text() == "whole"
    assert log.read_text().splitlines() == ["made"]
    assert not list(target.parent.glob("*.part"))


def test_a_failed_maker_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "entry"

    def fail(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        write_once(target, fail)
    assert not target.exists() and not list(tmp_path.glob("*.part"))
    write_once(target, lambda tmp: tmp.write_text("ok"))
    assert target.read_text() == "ok"
