"""Model-written programs run as hostile code (plumbing/sandbox.py): each attack is stopped or contained, the call
says how it ended, the next call still works, and nothing is left behind — no folder, no process.

Hostile programs first re-exec themselves with a marker in their argv, so every process they start can be found
from here in /proc, inside a pid namespace or not; they print their working folder, which must be gone after."""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flipscope.errors import FlipscopeError
from flipscope.plumbing import sandbox
from flipscope.plumbing.sandbox import (
    Execution,
    Isolation,
    Outcome,
    SandboxLimits,
    run_many,
    run_untrusted,
    sandbox_status,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox and these checks need Linux")

ROOT = os.geteuid() == 0
BWRAP_PROBLEM = sandbox._bubblewrap_problem() if sys.platform.startswith("linux") else "not Linux"
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"bubblewrap cannot run here: {BWRAP_PROBLEM}")
MODES = [
    pytest.param(Isolation.BUBBLEWRAP, marks=needs_bwrap, id="bubblewrap"),
    pytest.param(Isolation.NONE, id="none"),
]
#: Small limits, so that each hostile program is over in a second or two.
FAST = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_bytes=256 << 20, processes=16, output_bytes=4096)


def hostile(body: str, marker: str) -> str:
    """``body`` behind a prologue that re-execs the program with ``marker`` in its argv and prints its folder."""
    prologue = f"""\
        import os, sys
        if {marker!r} not in sys.argv:
            os.execv(sys.executable, [sys.executable, "-I", sys.argv[0], {marker!r}])
        print("CWD", os.getcwd(), flush=True)
    """
    return textwrap.dedent(prologue) + textwrap.dedent(body)


def survivors(marker: str, *, grace: float = 1.0) -> list[int]:
    """Live processes (zombies are dead) whose command line holds ``marker``, after ``grace`` seconds at most."""
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if marker.encode() in cmdline and stat[stat.rindex(")") + 2] != "Z":
                found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def assert_left_nothing(run: Execution, marker: str, mode: Isolation) -> None:
    """The program's folder is gone, none of its processes lives, and the next program runs."""
    folders = [line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("CWD ")]
    assert folders, run
    assert all(not Path(folder).exists() for folder in folders)
    assert survivors(marker) == []
    assert run_untrusted("print('still fine')", limits=FAST, sandbox=mode).stdout == "still fine\n"


@pytest.fixture
def marker() -> Iterator[str]:
    """The hostile program's marker; afterwards, should the sandbox have failed, its processes are killed here so
    that a failing test leaves no fork bomb behind."""
    marker = f"flipscope-hostile-{uuid.uuid4().hex}"
    yield marker
    for _ in range(100):
        if not (alive := survivors(marker, grace=0)):
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# --- ordinary programs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_passing_and_a_failing_program(mode: Isolation) -> None:
    passing = run_untrusted("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')", sandbox=mode)
    assert (passing.outcome, passing.exit_code, passing.stdout, passing.passed) == (Outcome.PASSED, 0, "ok\n", True)
    assert passing.sandboxed is (mode is Isolation.BUBBLEWRAP)
    failing = run_untrusted("def add(a, b):\n    return a - b\nassert add(2, 3) == 5", sandbox=mode)
    assert (failing.outcome, failing.exit_code, failing.passed) == (Outcome.FAILED, 1, False)
    assert "AssertionError" in failing.stderr


@pytest.mark.parametrize("mode", MODES)
def test_output_is_kept_to_a_bounded_tail(mode: Isolation) -> None:
    run = run_untrusted("for i in range(200_000):\n    print(i)\nprint('last')", limits=FAST, sandbox=mode)
    assert run.outcome is Outcome.PASSED
    assert len(run.stdout.encode()) <= FAST.output_bytes
    assert run.stdout.endswith("199999\nlast\n")


@pytest.mark.parametrize("stop", ["import sys\nsys.exit(0)", "exit()", "quit()", "raise SystemExit",
                                  "import os\nos._exit(0)", "import atexit, os\natexit.register(os._exit, 0)\n"
                                  "raise ValueError"])  # fmt: skip
@pytest.mark.parametrize("mode", MODES)
def test_a_program_that_stops_before_its_tests_does_not_pass(stop: str, mode: Isolation) -> None:
    run = run_untrusted(f"{stop}\nassert 1 == 2", limits=FAST, sandbox=mode)
    assert run.outcome is Outcome.FAILED and not run.passed, run


def test_a_main_block_does_not_run_and_a_passing_program_prints_no_token() -> None:
    run = run_untrusted("print(__name__)\nif __name__ == '__main__':\n    raise ValueError('main ran')", limits=FAST)
    assert (run.outcome, run.stdout) == (Outcome.PASSED, "builtins\n")
    assert run_untrusted("import sys\nsys.exit(152)", limits=FAST).outcome is Outcome.FAILED  # not read as SIGXCPU
    quiet = "import sys, io\nsys.stdout = io.StringIO()\nsys.stdout.close()\nassert 1 + 1 == 2"
    assert run_untrusted(quiet, limits=FAST).outcome is Outcome.PASSED  # lm-eval passes it: no assert failed
    tiny = SandboxLimits(wall_seconds=5, output_bytes=8)
    assert run_untrusted("print('x' * 100)", limits=tiny).outcome is Outcome.PASSED


def test_many_programs_come_back_in_order() -> None:
    runs = run_many([f"print({i})" for i in range(4)] + ["raise SystemExit(3)"], limits=FAST, workers=2)
    assert [run.stdout for run in runs[:4]] == ["0\n", "1\n", "2\n", "3\n"]
    assert (runs[4].outcome, runs[4].exit_code) == (Outcome.FAILED, 1)  # every SystemExit: status 1


# --- hostile programs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_loop_times_out_and_its_children_die(mode: Isolation, marker: str) -> None:
    body = """\
        import time
        if os.fork() == 0:  # a child that leaves the process group and sleeps
            os.setsid()
            time.sleep(60)
        while True:
            pass
    """
    run = run_untrusted(hostile(body, marker), limits=SandboxLimits(wall_seconds=1.0, cpu_seconds=30), sandbox=mode)
    assert (run.outcome, run.signal) == (Outcome.TIMEOUT, signal.SIGKILL)
    assert run.seconds < 4
    assert_left_nothing(run, marker, mode)


@pytest.mark.parametrize("mode", MODES)
def test_the_cpu_limit_is_set_in_the_child(mode: Isolation) -> None:
    run = run_untrusted("while True:\n    pass", limits=SandboxLimits(wall_seconds=20, cpu_seconds=1), sandbox=mode)
    assert (run.outcome, run.signal) == (Outcome.TIMEOUT, signal.SIGXCPU)
    assert run.seconds < 8  # the CPU limit ended it, not the wall clock


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_is_contained(mode: Isolation, marker: str) -> None:
    body = """\
        said = False
        while True:
            try:
                os.fork()
            except OSError:
                if not said:
                    print("EAGAIN", flush=True)  # the process limit bit (root would not be limited)
                    said = True
    """
    limits = SandboxLimits(wall_seconds=1.5, cpu_seconds=5, processes=12, output_bytes=4096)
    run = run_untrusted(hostile(body, marker), limits=limits, sandbox=mode)
    assert run.outcome is Outcome.TIMEOUT
    assert "EAGAIN" in run.stdout
    assert_left_nothing(run, marker, mode)


@pytest.mark.parametrize("mode", MODES)
def test_a_memory_bomb_stops_at_the_address_space_limit(mode: Isolation, marker: str) -> None:
    body = """\
        blob = bytearray(1 << 30)  # four times the limit
        print("allocated", flush=True)
    """
    run = run_untrusted(hostile(body, marker), limits=FAST, sandbox=mode)
    assert run.outcome is Outcome.MEMORY
    assert "allocated" not in run.stdout
    assert run.seconds < 5
    assert_left_nothing(run, marker, mode)


def test_a_crash_is_killed_not_failed() -> None:
    run = run_untrusted("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", limits=FAST)
    assert (run.outcome, run.exit_code, run.signal) == (Outcome.KILLED, None, signal.SIGSEGV)


@pytest.mark.parametrize("mode", MODES)
def test_it_cannot_write_outside_its_folder(mode: Isolation, tmp_path: Path, marker: str) -> None:
    if mode is Isolation.NONE and not ROOT:
        pytest.skip("without a sandbox a non-root user's program writes wherever that user can")
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)
    body = f"""\
        try:
            with open({str(outside / "pwned.txt")!r}, "w") as f:
                f.write("pwned")
            print("WROTE")
        except OSError as e:
            print("refused", e)
    """
    run = run_untrusted(hostile(body, marker), limits=FAST, sandbox=mode)
    assert "WROTE" not in run.stdout and "refused" in run.stdout
    assert list(outside.iterdir()) == []
    assert_left_nothing(run, marker, mode)


@pytest.mark.parametrize("mode", MODES)
def test_it_cannot_read_a_key_outside_its_folder(mode: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 marker: str) -> None:  # fmt: skip
    if mode is Isolation.NONE and not ROOT:
        pytest.skip("without a sandbox a non-root user's program reads what that user can")
    secret = f"KEY-{uuid.uuid4().hex}"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    key.write_text(secret)
    key.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    body = f"""\
        for path in ({str(key)!r}, os.path.expanduser("~/.ssh/id_ed25519")):
            try:
                print(open(path).read())
            except OSError as e:
                print("refused", e)
    """
    run = run_untrusted(hostile(body, marker), limits=FAST, sandbox=mode)
    assert run.stdout.count("refused") == 2
    assert secret not in run.stdout + run.stderr
    assert_left_nothing(run, marker, mode)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may enter and write, under /tmp (not under pytest's 0700 one), holding a world-readable key."""
    folder = Path(tempfile.mkdtemp(prefix="flipscope-test-open-"))
    folder.chmod(0o777)
    (folder / "key").write_text(f"KEY-{uuid.uuid4().hex}")
    (folder / "key").chmod(0o644)
    yield folder
    shutil.rmtree(folder)


OPEN_FOLDER = """\
    print("SEES", [path for path in ({here!r}, {repo!r}) if os.path.exists(path)])
    try:
        print("READ", open({key!r}).read())
    except OSError as e:
        print("refused to read", e)
    try:
        with open({pwned!r}, "w") as f:
            f.write("pwned")
        print("WROTE")
    except OSError as e:
        print("refused to write", e)
"""


def open_folder_program(folder: Path) -> str:
    """A program that reports whether it sees this checkout, reads the folder's key, and writes into it."""
    here = Path(__file__).resolve()
    return OPEN_FOLDER.format(here=str(here), repo=str(here.parents[1]), key=str(folder / "key"),
                              pwned=str(folder / "pwned"))  # fmt: skip


@needs_bwrap
def test_bubblewrap_hides_even_what_anyone_may_read_and_write(open_folder: Path, marker: str) -> None:
    run = run_untrusted(hostile(open_folder_program(open_folder), marker), limits=FAST, sandbox="bubblewrap")
    assert "SEES []" in run.stdout  # nor this checkout
    assert "refused to read" in run.stdout and "refused to write" in run.stdout
    assert (open_folder / "key").read_text() not in run.stdout
    assert sorted(p.name for p in open_folder.iterdir()) == ["key"]
    assert_left_nothing(run, marker, Isolation.BUBBLEWRAP)


def test_without_a_sandbox_what_anyone_may_read_and_write_is_exposed(open_folder: Path) -> None:
    """The control for the test above, and the limit of ``sandbox="none"``: only file permissions protect."""
    run = run_untrusted("import os\n" + textwrap.dedent(open_folder_program(open_folder)), limits=FAST, sandbox="none")
    assert (open_folder / "key").read_text() in run.stdout and "WROTE" in run.stdout


@pytest.mark.parametrize("mode", MODES)
def test_it_sees_none_of_our_environment(mode: Isolation, monkeypatch: pytest.MonkeyPatch) -> None:
    token = f"TOKEN-{uuid.uuid4().hex}"
    monkeypatch.setenv("FLIPSCOPE_TEST_SECRET_TOKEN", token)
    run = run_untrusted("import os\nprint(sorted(os.environ.items()))", limits=FAST, sandbox=mode)
    assert run.outcome is Outcome.PASSED
    assert token not in run.stdout
    names = {name for name, _ in ast.literal_eval(run.stdout)}
    assert names <= {"PATH", "LANG", "HOME", "PWD"}  # bubblewrap sets PWD after --chdir


CONNECT = """\
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print("CONNECTED")
except OSError as e:
    print("blocked", e)
"""


def _connections(listener: socket.socket) -> int:
    listener.setblocking(False)
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


@needs_bwrap
def test_bubblewrap_cuts_the_network() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        run = run_untrusted(CONNECT.format(port=listener.getsockname()[1]), limits=FAST, sandbox="bubblewrap")
        assert "blocked" in run.stdout and "CONNECTED" not in run.stdout
        assert _connections(listener) == 0


def test_without_a_sandbox_the_network_is_reachable() -> None:
    """The control for the test above: the same program does connect when nothing isolates it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        run = run_untrusted(CONNECT.format(port=listener.getsockname()[1]), limits=FAST, sandbox="none")
        assert "CONNECTED" in run.stdout
        assert _connections(listener) == 1


# --- choosing the isolation --------------------------------------------------------------------------------------


def test_status_is_one_line() -> None:
    status = sandbox_status()
    assert "\n" not in status
    assert status.startswith("code ran in bubblewrap:" if BWRAP_PROBLEM is None else "code ran without a sandbox:")


def test_without_bubblewrap_auto_falls_back_and_bubblewrap_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_bubblewrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    run = run_untrusted("print('ok')", limits=FAST)
    assert (run.outcome, run.sandboxed) == (Outcome.PASSED, False)
    assert sandbox_status().startswith("code ran without a sandbox: bubblewrap (bwrap) is not installed")
    with pytest.raises(FlipscopeError, match="apt-get install bubblewrap"):
        run_untrusted("print('ok')", sandbox=Isolation.BUBBLEWRAP)


def test_bad_choices_and_limits_are_refused() -> None:
    with pytest.raises(FlipscopeError, match="unknown sandbox"):
        run_untrusted("pass", sandbox="docker")
    with pytest.raises(FlipscopeError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)
    with pytest.raises(FlipscopeError, match="workers"):
        run_many(["pass"], workers=0)


@pytest.mark.parametrize("mode", MODES)
def test_the_folder_is_removed_when_the_start_fails(mode: Isolation, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    run_untrusted("pass", limits=FAST, sandbox=mode)  # the interpreter's check runs before the patches below
    monkeypatch.setattr(sandbox.tempfile, "tempdir", str(tmp_path))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("cannot start")

    monkeypatch.setattr(sandbox.subprocess, "Popen", refuse)
    with pytest.raises(OSError, match="cannot start"):
        run_untrusted("pass", limits=FAST, sandbox=mode)
    assert list(tmp_path.iterdir()) == []
