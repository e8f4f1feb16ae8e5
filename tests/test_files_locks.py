"""Files and locks as the README promises: every output file appears whole by a rename (a write that dies midway
leaves nothing under the final name), is flushed to disk before it appears, run directories get ``run.json``
last; a process waiting for a lock says what it waits for and which pid holds it; a complete pass is never
replaced by another process's; two runs cannot share one ``--out``."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flipscope.errors import FlipscopeError
from flipscope.plumbing import atomic as _atomic

# --- a write that dies midway -----------------------------------------------------------------------------------


class Torn(Exception):
    """The process died here (a kill, a full disk): the write stopped after half its bytes."""


@pytest.fixture
def tear(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Path], bool]], None]:
    """``tear(hit)``: from now on every text, bytes, Parquet or PNG write to a path where ``hit(path)`` writes
    half its bytes there and raises :class:`Torn` — as a killed process leaves a file it was writing."""
    import matplotlib.figure
    import pandas as pd

    def install(hit: Callable[[Path], bool]) -> None:
        def torn(path: Path, data: bytes) -> None:
            with open(path, "wb") as handle:
                handle.write(data[: len(data) // 2])
            raise Torn(str(path))

        real_text, real_bytes = Path.write_text, Path.write_bytes
        real_parquet, real_savefig = pd.DataFrame.to_parquet, matplotlib.figure.Figure.savefig

        def write_text(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
            if hit(self):
                torn(self, data.encode())
            return real_text(self, data, *args, **kwargs)

        def write_bytes(self: Path, data: bytes) -> int:
            if hit(self):
                torn(self, bytes(data))
            return real_bytes(self, data)

        def to_parquet(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, (str, os.PathLike)) and hit(Path(path)):
                buffer = io.BytesIO()
                real_parquet(self, buffer, *args, **kwargs)
                torn(Path(path), buffer.getvalue())
            return real_parquet(self, path, *args, **kwargs)

        def savefig(self: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(path, (str, os.PathLike)) and hit(Path(path)):
                buffer = io.BytesIO()
                real_savefig(self, buffer, *args, **{"format": "png", **kwargs})
                torn(Path(path), buffer.getvalue())
            return real_savefig(self, path, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(pd.DataFrame, "to_parquet", to_parquet)
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)

    return install


def named(prefix: str) -> Callable[[Path], bool]:
    """Writes to ``prefix…`` (the file itself, or a temporary name of it)."""
    return lambda path: path.name.startswith(prefix)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part") or ".part" in p.suffixes)


def test_a_kld_run_dying_while_it_writes_leaves_no_partial_file(
    tiny_llama: Path, tmp_path: Path, tear: Callable[[Callable[[Path], bool]], None]
) -> None:
    import flipscope

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 20)
    common = {"corpus": str(corpus), "ctx": 32, "max_windows": 2, "cache_dir": tmp_path / "cache", "device": "cpu"}
    out = tmp_path / "run"
    tear(named("positions.parquet"))
    with pytest.raises(Torn):
        flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g16"], store="live", out=out, **common)
    assert not (out / "positions.parquet").exists() and not (out / "run.json").exists()
    assert not leftovers(tmp_path / "run")


def test_a_kld_run_directory_appears_by_renames_run_json_last(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flipscope

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 20)
    out = tmp_path / "run"
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).parent == out:
            renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g16"], store="live", out=out, corpus=str(corpus), ctx=32,
                  max_windows=2, cache_dir=tmp_path / "cache", device="cpu")  # fmt: skip
    assert renamed == ["positions.parquet", "run.json"]
    assert sorted(p.name for p in out.iterdir()) == ["positions.parquet", "run.json"]  # no claim left behind


def test_plans_reports_and_figures_are_whole_or_absent(
    scripts: Any, mc_file: Path, tmp_path: Path, tear: Callable[[Callable[[Path], bool]], None]
) -> None:
    from flipscope import compare
    from flipscope.compress.plan import read_plan, write_plan
    from flipscope.compress.rtn import RTNConfig
    from flipscope.report.collect import collect
    from flipscope.report.markdown import write_markdown
    from tests.conftest import Script
    from tests.test_pipeline import answers

    scripts["b"] = Script(answers({}))
    scripts["c"] = Script(answers({1: 2}))
    compare("mock:b", ["mock:c"], tasks=[str(mc_file)], out=tmp_path / "run", cache_dir=tmp_path / "cache")
    plan = write_plan(tmp_path / "plan.json", RTNConfig(bits=4, group_size=16), {"a": RTNConfig(bits=8, group_size=16)})
    before = plan.read_text()
    tear(named("plan.json"))
    with pytest.raises(Torn):
        write_plan(plan, RTNConfig(bits=3, group_size=16), {})
    assert plan.read_text() == before and read_plan(plan)[0].bits == 4  # the old plan, whole
    data = collect([tmp_path / "run"])
    tear(named("report.md"))
    with pytest.raises(Torn):
        write_markdown(data, tmp_path / "report.md")
    assert not (tmp_path / "report.md").exists()
    tear(lambda path: path.parent.name == "report2_files")
    with pytest.raises(Torn):
        write_markdown(data, tmp_path / "report2.md")
    assert not [p for p in (tmp_path / "report2_files").iterdir() if p.suffix == ".png"]
    assert not leftovers(tmp_path)


def test_generations_complete_and_hash_memos_are_whole_or_absent(
    tmp_path: Path, tear: Callable[[Callable[[Path], bool]], None]
) -> None:
    from flipscope.models.base import Generation, StopReason
    from flipscope.plumbing.cache import cache_root, file_sha256
    from flipscope.store.generations import GenerationStore

    store = GenerationStore(tmp_path / "generations")
    tear(named("complete.json"))
    with pytest.raises(Torn):
        store.run("k", 3, lambda idx: [Generation(f"a{i}", StopReason.EOS, 3, 2) for i in idx], chunk=2)
    folder = store.folder("k")
    assert not (folder / "complete.json").exists() and len(list(folder.glob("chunk-*.jsonl"))) == 2
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 1000)
    tear(lambda path: path.parent.name == "hashes")
    with pytest.raises(Torn):
        file_sha256(weights)
    assert not list((cache_root() / "hashes").glob("*.json"))
    assert not leftovers(tmp_path) and not leftovers(cache_root())


# --- flushed to disk before it appears ---------------------------------------------------------------------------


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync was called on, in order (a directory by its own path)."""
    calls: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_an_atomic_write_is_flushed_then_renamed_then_its_folder_flushed(
    tmp_path: Path, synced: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a" / "file.json"
    target.parent.mkdir()
    events: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda s, d: (events.append(f"rename {Path(d).name}"), real_replace(s, d)))
    _atomic.write_atomically(target, lambda tmp: (events.append(f"fsyncs before: {len(synced)}"), tmp.write_text("{}")))
    assert synced == [str(_atomic.temporary(target)), str(target.parent)]
    assert events == ["fsyncs before: 0", "rename file.json"]


def test_a_folder_made_once_is_flushed_file_by_file(tmp_path: Path, synced: list[str]) -> None:
    target = tmp_path / "entry"

    def make(tmp: Path) -> None:
        (tmp / "sub").mkdir(parents=True)
        (tmp / "one.bin").write_bytes(b"1")
        (tmp / "sub" / "two.bin").write_bytes(b"2")

    _atomic.write_once(target, make)
    tmp = _atomic.temporary(target)
    assert set(synced[:-1]) == {str(tmp / "one.bin"), str(tmp / "sub" / "two.bin"), str(tmp / "sub"), str(tmp)}
    assert synced[-1] == str(tmp_path)  # after the rename: the folder that now names it


# --- a lock another process holds ---------------------------------------------------------------------------------


def _hold(lock_target: str, seconds: float, ready: str) -> None:
    with _atomic.exclusive(Path(lock_target)):
        Path(ready).write_text(str(os.getpid()))
        time.sleep(seconds)


def _claim_and_wait(out: str, ready: str) -> None:
    from flipscope.store.run_dir import check_out

    check_out(out)
    Path(ready).write_text(str(os.getpid()))
    time.sleep(120)


@pytest.fixture
def other_process() -> Iterator[Callable[..., multiprocessing.process.BaseProcess]]:
    """Start ``fn(*args, ready)`` in another process and wait until it wrote ``ready``."""
    started: list[multiprocessing.process.BaseProcess] = []

    def start(fn: Callable[..., None], *args: Any, ready: Path) -> multiprocessing.process.BaseProcess:
        proc = multiprocessing.get_context("spawn").Process(target=fn, args=(*args, str(ready)))
        proc.start()
        started.append(proc)
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.is_alive() and time.monotonic() < deadline, "the other process did not start"
            time.sleep(0.05)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.join()


def test_a_waiting_lock_says_what_it_waits_for_and_who_holds_it(
    tmp_path: Path, other_process: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cache" / "entry"
    ready = tmp_path / "ready"
    other = other_process(_hold, str(target), 3.0, ready=ready)
    lock = target.with_name("entry.lock")
    assert lock.read_text().split() == [str(other.pid)]  # the holder's pid is in the lock file
    monkeypatch.setattr(_atomic, "WAIT_WARNING_S", 0.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flipscope"), _atomic.exclusive(target):
        waited = time.monotonic() - start
        assert lock.read_text().split() == [str(os.getpid())]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert waited > 0.5 and len(warnings) == 1
    assert str(target) in warnings[0] and f"pid {other.pid}" in warnings[0]


def test_a_short_wait_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "entry"
    with caplog.at_level(logging.DEBUG, logger="flipscope"):
        with _atomic.exclusive(target):
            pass
        with _atomic.exclusive(target):
            pass
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- passes and run directories ------------------------------------------------------------------------------------


def _pass(key: str, logprob: float) -> Any:
    from flipscope.metrics import ItemScore
    from flipscope.store import PassResult

    score = ItemScore(task="t", item_id="q0", subject="", target=0, logprobs=(logprob, -5.0), option_chars=(1, 1))
    return PassResult(key, {"made_by": logprob}, [score])


def test_a_complete_pass_is_never_replaced_by_another(tmp_path: Path) -> None:
    from flipscope.store import PassStore

    store = PassStore(tmp_path / "passes")
    first, second = _pass("k", -1.0), _pass("k", -2.0)
    assert store.save(first).scores == first.scores
    kept = store.save(second)  # another process finished the same pass later
    assert kept.scores == first.scores and kept.model == {"made_by": -1.0}
    loaded = store.load("k")
    assert loaded is not None and loaded.scores == first.scores
    assert store.save(second, replace=True).scores == second.scores  # --no-cache: computed again on purpose
    loaded = store.load("k")
    assert loaded is not None and loaded.scores == second.scores


def test_a_pass_deleted_while_it_is_read_is_no_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored pass's chunks are deleted once merged; a process that saw a chunk complete and reads it as another
    deletes it gets None (and keeps or scores its own), not a FileNotFoundError — seen in the sharded jobs test."""
    import shutil

    from flipscope.store import PassStore, passes

    store = PassStore(tmp_path / "passes")
    first, second = _pass("k.part00000", -1.0), _pass("k.part00000", -2.0)
    store.save(first)
    real = passes._complete

    def merged_meanwhile(folder: Path) -> bool:  # complete when looked at, deleted before its files are read
        seen = real(folder)
        if seen and folder.name == "k.part00000" and (folder / "scores.parquet").exists():
            shutil.rmtree(folder)
        return seen

    monkeypatch.setattr(passes, "_complete", merged_meanwhile)
    assert store.load("k.part00000") is None
    store.save(first)
    assert store.save(second).scores == second.scores  # its own: the stored one went while being read


def test_two_runs_cannot_share_an_out_folder(tmp_path: Path, other_process: Any) -> None:
    from flipscope.store.run_dir import check_out, claim_run_dir

    out = tmp_path / "run"
    other = other_process(_claim_and_wait, str(out), ready=tmp_path / "ready")
    with pytest.raises(FlipscopeError, match=rf"{out} is in use by another flipscope run \(pid {other.pid}\)") as exc:
        check_out(out)
    assert "\n" not in exc.value.one_line()
    with pytest.raises(FlipscopeError, match="in use"):
        claim_run_dir(out)
    other.kill()  # a killed run leaves its claim to the next
    other.join()
    assert check_out(out) == out and claim_run_dir(out) == out


def test_a_run_killed_while_writing_is_written_again(
    scripts: Any, mc_file: Path, tmp_path: Path, tear: Callable[[Callable[[Path], bool]], None]
) -> None:
    from flipscope import compare
    from tests.conftest import Script
    from tests.test_pipeline import answers

    scripts["b"] = Script(answers({}))
    scripts["c"] = Script(answers({1: 2}))
    kwargs: dict[str, Any] = {"tasks": [str(mc_file)], "out": tmp_path / "run", "cache_dir": tmp_path / "cache"}
    armed = [True]
    tear(lambda path: armed[0] and path.name.startswith("run.json"))
    with pytest.raises(Torn):
        compare("mock:b", ["mock:c"], **kwargs)
    armed[0] = False
    assert not (tmp_path / "run" / "run.json").exists() and (tmp_path / "run" / "records.parquet").exists()
    result = compare("mock:b", ["mock:c"], **kwargs)  # the interrupted directory is written again
    assert (tmp_path / "run" / "run.json").exists() and result.out == tmp_path / "run"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["items.parquet", "records.parquet", "run.json"]


# --- a folder replaced, a lock file deleted, a failed run's --out --------------------------------------------------


def _new_folder(tmp: Path) -> None:
    tmp.mkdir()
    (tmp / "data").write_text("new")


@pytest.mark.parametrize("exchange", [True, False], ids=["exchanged", "renamed-aside"])
def test_a_replaced_folder_is_never_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    target = tmp_path / "entry"
    target.mkdir()
    (target / "data").write_text("old")
    if not exchange:  # a file system without an atomic exchange: the old folder is renamed aside, then deleted
        monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False, raising=False)
    seen: list[str] = []  # what a reader finds under the target after each step that renames or deletes
    real_remove, real_replace = _atomic._remove, os.replace

    def look() -> None:
        seen.append((target / "data").read_text() if target.is_dir() else "missing")

    def remove(path: Path) -> None:
        real_remove(path)
        look()

    def replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        look()

    monkeypatch.setattr(_atomic, "_remove", remove)
    monkeypatch.setattr(os, "replace", replace)
    _atomic.write_atomically(target, _new_folder, replace_folder=True)
    assert (target / "data").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    if exchange:
        assert "missing" not in seen and seen[-1] == "new"
    else:  # missing only between the two renames, never while the old folder is being deleted
        assert seen[-2:] == ["new", "new"] and seen.count("missing") <= 1


def test_a_waiter_on_a_deleted_lock_file_takes_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    path = tmp_path / "entry.lock"
    holder = _atomic.FileLock(path, what="entry")
    holder.acquire()
    waiting = threading.Event()
    real_try = _atomic._try_lock

    def try_lock(fd: int) -> bool:
        got = real_try(fd)
        if not got:
            waiting.set()  # the waiter has opened the lock file the holder is about to delete
        return got

    monkeypatch.setattr(_atomic, "_try_lock", try_lock)
    waiter = _atomic.FileLock(path, what="entry")
    thread = threading.Thread(target=waiter.acquire)
    thread.start()
    assert waiting.wait(10)
    holder.release(remove=True)  # deletes the file, then unlocks it: the waiter gets a lock on a deleted file
    thread.join(10)
    assert not thread.is_alive()
    third = _atomic.FileLock(path, what="entry")
    with pytest.raises(_atomic.LockHeld):  # the waiter holds the lock every other process sees
        third.acquire(wait=False)
    waiter.release(remove=True)
    third.acquire(wait=False)
    third.release(remove=True)


def test_deleting_a_pass_waits_for_the_process_writing_it(tmp_path: Path) -> None:
    import threading

    from flipscope.store import PassStore

    store = PassStore(tmp_path / "passes")
    store.save(_pass("k", -1.0))
    holder = _atomic.FileLock(store.path("k").with_name("k.lock"), what="pass k")
    holder.acquire()  # another process is writing pass k
    thread = threading.Thread(target=store.delete, args=("k",))
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and store.path("k").is_dir()  # it waits: the entry and its lock stay while held
    holder.release()
    thread.join(10)
    assert not thread.is_alive() and not store.path("k").exists() and not store.path("k").with_name("k.lock").exists()


def _claim(out: str, ready: str) -> None:
    from flipscope.store.run_dir import check_out

    check_out(out)  # raises (and the process ends) where another run holds it
    Path(ready).write_text(str(os.getpid()))
    time.sleep(120)


def test_a_failed_api_run_lets_its_out_go(scripts: Any, mc_file: Path, tmp_path: Path, other_process: Any) -> None:
    from flipscope import compare
    from tests.conftest import Script
    from tests.test_pipeline import answers

    def broken(i: int, request: Any) -> tuple[float, ...]:
        raise RuntimeError("the candidate's server went away")

    scripts["b"] = Script(answers({}))
    scripts["c"] = Script(broken)
    out = tmp_path / "run"
    kwargs: dict[str, Any] = {"tasks": [str(mc_file)], "out": out, "cache_dir": tmp_path / "cache"}
    with pytest.raises(RuntimeError, match="went away"):
        compare("mock:b", ["mock:c"], **kwargs)
    other = other_process(_claim, str(out), ready=tmp_path / "ready")  # another process may take it now
    other.kill()
    other.join()
    scripts["c"] = Script(answers({1: 2}))
    result = compare("mock:b", ["mock:c"], **kwargs)  # and so may this one
    assert result.out == out and (out / "run.json").is_file()


def _failing_runs(tmp_path: Path) -> dict[str, Callable[[Path], object]]:
    """Each API that claims an ``--out``, given input it refuses after claiming it."""
    from flipscope import compare, kld, mtbench
    from flipscope.runs.attribute import attribute
    from flipscope.runs.lm_eval_import import import_lm_eval

    return {
        "compare": lambda out: compare("mock:nosuch", ["mock:c"], tasks=["mmlu"], out=out),
        "kld": lambda out: kld("mock:b", ["mock:c"], corpus=str(tmp_path / "no-corpus.txt"), out=out),
        "mtbench": lambda out: mtbench("nosuch:b", ["nosuch:c"], out=out),
        "import": lambda out: import_lm_eval(tmp_path / "no-base", [tmp_path / "no-cand"], out=out),
        "attribute": lambda out: attribute("mock:b", "mock:c", out=out),
    }


@pytest.mark.parametrize("api", ["compare", "kld", "mtbench", "import", "attribute"])
def test_every_api_lets_its_out_go_when_it_fails(tmp_path: Path, api: str) -> None:
    from flipscope.store.run_dir import CLAIM_FILE

    out = tmp_path / "run"
    with pytest.raises(Exception) as failed:
        _failing_runs(tmp_path)[api](out)
    assert str(out) not in str(failed.value)  # it failed on its input, after claiming the folder
    other = _atomic.FileLock(out / CLAIM_FILE, what="run")  # a lock of its own, as another process takes it
    other.acquire(wait=False)
    other.release(remove=True)


def test_a_folder_renamed_aside_goes_back_when_the_new_one_cannot_go_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "entry"
    target.mkdir()
    (target / "data").write_text("old")
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src) == _atomic.temporary(target):
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        _atomic.write_atomically(target, _new_folder, replace_folder=True)
    assert (target / "data").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
