"""Running model-written (hostile) Python programs to grade them: ``run_untrusted(program)`` → ``Execution``.

Each program gets a fresh temporary folder (removed afterwards whatever happens) and runs as ``python -I`` in a
process of its own session, with an empty environment (PATH, LANG and HOME, the folder), stdin on /dev/null and
its output kept to a bounded tail. A trusted launcher sets the resource limits in the child (CPU, address space,
file size, processes, open files, no core dumps), drops root to uid 65534 (``nobody``: the kernel does not apply
RLIMIT_NPROC to root, so only then is a fork bomb bounded) and execs a trusted runner that executes the program
as lm-eval's ``code_eval`` does and reports whether its code ran to the end (``sandbox_child``: a program that
calls ``sys.exit(0)`` or ``os._exit(0)`` before its tests does not pass). The parent enforces the wall clock and
then kills everything the program started.

With bubblewrap (``bwrap``) the program also runs in its own pid, network, IPC and mount namespaces: it sees
read-only /usr (and the interpreter's prefix, nothing else of the home folder), a fresh /proc and /dev, and two
size-bounded tmpfs (/tmp and its working folder, which holds a read-only copy of the program); ending the
sandbox's first process ends every process in it. ``Isolation.AUTO`` uses bubblewrap where one test run shows it
works (``sandbox_status`` says which isolation is in use, and why) and falls back to limits alone.

Without bubblewrap the program can use the network, read what uid 65534 (or, for a non-root user, that user) may
read, and fill the disk for up to its wall time; a process that leaves its session, whose parent exits, that
leaves the working folder and that execs with another environment escapes the final sweep (its CPU limit still
ends it if it spins).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.plumbing.bubblewrap import bubblewrap_args, bwrap_path
from flipscope.plumbing.processes import Tail, children, drain, kill, pump, sweep, tasks_of
from flipscope.plumbing.sandbox_child import LAUNCHER, RUNNER

log = logging.getLogger(__name__)

#: The unprivileged uid (and gid) a root parent runs programs as.
NOBODY = 65534
_PATH = "/usr/local/bin:/usr/bin:/bin"
_INSTALL = "install bubblewrap (apt-get install bubblewrap) on a system that allows it"
_FIX = f"{_INSTALL}, or pass sandbox='none'"
_PROGRAM = "program.py"


class Isolation(StrEnum):
    """How a program is isolated: ``auto`` (bubblewrap where it works, else limits alone), ``bubblewrap`` (or an
    error saying how to get it), ``none`` (resource limits and an unprivileged uid only)."""

    AUTO = "auto"
    BUBBLEWRAP = "bubblewrap"
    NONE = "none"


class Outcome(StrEnum):
    """How a program ended. Only ``passed`` counts as a pass when grading."""

    PASSED = "passed"  # its code ran to the end without raising (the runner's token came back, status 0)
    FAILED = "failed"  # it raised (a failed assert, an exception, sys.exit() of any status) or ended its process
    TIMEOUT = "timeout"  # ran past its wall-clock or CPU limit and was killed
    MEMORY = "memory"  # stopped by the address-space limit (its last error a MemoryError)
    KILLED = "killed"  # ended by a signal of its own doing (a crash); writing past the file-size limit is an
    # OSError the program can catch: "failed" unless it does


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """What one program may use. ``processes`` counts processes and threads beyond those its user already runs
    (RLIMIT_NPROC is per user); ``output_bytes`` is the tail kept of each of stdout and stderr;
    ``scratch_bytes`` the size of each writable tmpfs (/tmp, the working folder) under bubblewrap."""

    wall_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20
    processes: int = 64
    open_files: int = 64
    output_bytes: int = 64 << 10
    scratch_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise FlipscopeError(f"sandbox limit {field.name}={value} is not positive", fix="give a value > 0")


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class Execution:
    """One program's run: how it ended, its exit status or the signal that ended it (bubblewrap reports a signal
    as status 128 + n, read back as the signal), wall seconds, the decoded tails of its output, and whether
    bubblewrap isolated it."""

    outcome: Outcome
    exit_code: int | None
    signal: int | None
    seconds: float
    stdout: str
    stderr: str
    sandboxed: bool

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED


def run_untrusted(
    program: str, *, limits: SandboxLimits = DEFAULT_LIMITS, sandbox: Isolation | str = Isolation.AUTO
) -> Execution:
    """Run ``program`` (Python source) as hostile code under ``limits`` and say how it ended. Raises
    ``FlipscopeError`` where ``sandbox`` is ``bubblewrap`` and bubblewrap cannot run here."""
    return _run(program, limits, bubblewrap=_use_bubblewrap(sandbox))


def run_many(
    programs: Iterable[str],
    *,
    limits: SandboxLimits = DEFAULT_LIMITS,
    sandbox: Isolation | str = Isolation.AUTO,
    workers: int = 2,
) -> list[Execution]:
    """``run_untrusted`` over ``programs``, ``workers`` at a time; results in the programs' order."""
    if workers < 1:
        raise FlipscopeError(f"workers={workers} is below 1", fix="run at least one program at a time")
    bubblewrap = _use_bubblewrap(sandbox)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda program: _run(program, limits, bubblewrap=bubblewrap), programs))


def sandbox_status() -> str:
    """One line: the isolation ``Isolation.AUTO`` gives here, and why — for a run's notes."""
    who = f"as uid {NOBODY} (nobody)" if os.geteuid() == 0 else f"as uid {os.getuid()}"
    problem = _bubblewrap_problem()
    if problem is None:
        return (
            f"code ran in bubblewrap: no network, own pid/mount/IPC namespaces, read-only system files, limits, {who}"
        )
    return f"code ran without a sandbox: {problem}; resource limits only, {who} — {_FIX}"


# --- choosing the isolation and the interpreter ------------------------------------------------------------------


def _use_bubblewrap(sandbox: Isolation | str) -> bool:
    """Whether to use bubblewrap for ``sandbox``; ``auto`` falls back (with one warning) where it cannot run."""
    try:
        choice = Isolation(sandbox)
    except ValueError:
        raise FlipscopeError(f"unknown sandbox {sandbox!r}", fix="use auto, bubblewrap or none") from None
    if choice is Isolation.NONE:
        return False
    problem = _bubblewrap_problem()
    if problem is None:
        return True
    if choice is Isolation.BUBBLEWRAP:
        raise FlipscopeError(f"cannot sandbox model-written code: {problem}", fix=_FIX)
    _warn_once(f"model-written code runs without a sandbox: {problem} — {_FIX}")
    return False


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


@functools.cache
def _bubblewrap_problem() -> str | None:
    """Why bubblewrap cannot isolate a program here (None: it can), found once by running one in it."""
    if not sys.platform.startswith("linux"):
        return "bubblewrap needs Linux"
    if bwrap_path(_PATH) is None:
        return "bubblewrap (bwrap) is not installed"
    probe = _execute("pass", _base_interpreter(), SandboxLimits(wall_seconds=20), bubblewrap=True)
    if probe.passed:
        return None
    lines = probe.stderr.strip().splitlines()
    return f"bwrap does not run here ({lines[-1] if lines else probe.outcome.value})"


def _base_interpreter() -> Path:
    """The real interpreter under ``sys.base_prefix`` (a venv's python is a link that may point outside it)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix, "bin", version), Path(sys.base_prefix, "bin", "python3")):
        if candidate.is_file():
            return candidate.resolve()
    return Path(sys.executable).resolve()


@functools.cache
def _plain_interpreter() -> Path:
    """The interpreter for programs without bubblewrap: the base one, else the system's python3, the first that
    the programs' uid can run (one test run each where that uid is not ours)."""
    base = _base_interpreter()
    if os.geteuid() != 0:
        return base
    system = shutil.which("python3", path=_PATH)
    for candidate in dict.fromkeys([base, *([Path(system).resolve()] if system else [])]):
        if _execute("pass", candidate, SandboxLimits(wall_seconds=20), bubblewrap=False).passed:
            if candidate != base:
                log.info("uid %d cannot run %s: programs run on %s", NOBODY, base, candidate)
            return candidate
    raise FlipscopeError(
        f"no Python interpreter that uid {NOBODY} (nobody) can run: {base} lies in a folder it cannot enter",
        fix=f"{_INSTALL}, or a system python3",
    )


# --- one run -----------------------------------------------------------------------------------------------------


def _run(program: str, limits: SandboxLimits, *, bubblewrap: bool) -> Execution:
    interpreter = _base_interpreter() if bubblewrap else _plain_interpreter()
    return _execute(program, interpreter, limits, bubblewrap=bubblewrap)


def _child_uid() -> int | None:
    """The uid programs run as: nobody's where we are root, else ours (None: no change)."""
    return NOBODY if os.geteuid() == 0 else None


def _execute(program: str, interpreter: Path, limits: SandboxLimits, *, bubblewrap: bool) -> Execution:
    """Write ``program`` into a fresh folder, run it, remove the folder."""
    workdir = Path(tempfile.mkdtemp(prefix="flipscope-sandbox-"))
    try:
        path = workdir / _PROGRAM
        path.write_text(program, encoding="utf-8")
        uid = _child_uid()
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(path, uid, uid)
        report = os.pipe()  # the runner's word that the program ran to its end (``sandbox_child``)
        try:
            argv = _launch(workdir, interpreter, limits, parent=0 if bubblewrap else os.getpid(), report=report[1])
            if bubblewrap:
                own = bubblewrap_args(workdir, workdir / _PROGRAM, interpreter, env=_env(workdir),
                                      scratch_bytes=limits.scratch_bytes, path=_PATH)  # fmt: skip
                argv = [*own, *argv]
        except BaseException:
            for fd in report:
                os.close(fd)
            raise
        return _supervise(argv, workdir, limits, bubblewrap=bubblewrap, report=report)
    finally:
        _remove(workdir)


def _launch(workdir: Path, interpreter: Path, limits: SandboxLimits, *, parent: int, report: int) -> list[str]:
    """The launcher's command line: limits, the uid to become (-1: stay), the parent to die with (0: none), the
    runner and the program, the file descriptor the runner reports on."""
    uid = _child_uid()
    nproc = tasks_of(os.getuid() if uid is None else uid) + limits.processes
    numbers = (math.ceil(limits.cpu_seconds), limits.memory_bytes, limits.file_bytes, nproc, limits.open_files)
    tail = (-1 if uid is None else uid, parent)
    program = str(workdir / _PROGRAM)
    return [str(interpreter), "-I", "-S", "-c", LAUNCHER, *map(str, (*numbers, *tail)), RUNNER, program, str(report)]


def _env(workdir: Path) -> dict[str, str]:
    """The program's whole environment: nothing of ours is inherited."""
    return {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": str(workdir)}


# --- supervising the process -------------------------------------------------------------------------------------


def _supervise(
    argv: list[str], workdir: Path, limits: SandboxLimits, *, bubblewrap: bool, report: tuple[int, int]
) -> Execution:
    """Start ``argv``, keep its output's tails until it exits or the wall clock runs out, then end everything it
    started (before reaping it, so its pid — its process group's id — cannot be reused meanwhile). ``report``: the
    pipe (read end, write end; both closed here) on which the runner writes the token it was given on stdin."""
    start = time.monotonic()
    token = secrets.token_hex(16)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
            env=_env(workdir), start_new_session=True, pass_fds=(report[1],),
        )  # fmt: skip
    except BaseException:
        os.close(report[0])
        raise
    finally:
        os.close(report[1])
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(OSError):  # the runner's token: a few bytes, never more than the pipe holds
        proc.stdin.write(f"{token}\n".encode())
    with contextlib.suppress(OSError):
        proc.stdin.close()
    tails = {proc.stdout.fileno(): Tail(limits.output_bytes), proc.stderr.fileno(): Tail(limits.output_bytes)}
    try:
        with selectors.DefaultSelector() as selector:
            for fd in tails:
                selector.register(fd, selectors.EVENT_READ)
            finished = pump(proc.pid, selector, tails, start + limits.wall_seconds)
            _stop(proc, workdir, bubblewrap=bubblewrap)
            drain(selector, tails)
    finally:
        _stop(proc, workdir, bubblewrap=bubblewrap)
        proc.stdout.close()
        proc.stderr.close()
        ended = _read_report(report[0]) == token.encode()
    stdout, stderr = (tail.text() for tail in tails.values())
    status = proc.returncode
    if bubblewrap and 128 < status <= 128 + 64:
        status = -(status - 128)
    return _execution(status, finished=finished, ended=ended, seconds=time.monotonic() - start, stdout=stdout,
                      stderr=stderr, sandboxed=bubblewrap)  # fmt: skip


def _read_report(fd: int) -> bytes:
    """What the runner wrote on its report pipe (read once every process is gone; never waits), then closed."""
    try:
        os.set_blocking(fd, False)
        return os.read(fd, 256)
    except OSError:  # BlockingIOError: nothing written and a stray process still holds the pipe open
        return b""
    finally:
        os.close(fd)


def _stop(proc: subprocess.Popen[bytes], workdir: Path, *, bubblewrap: bool) -> None:
    """End the program and all it started, then reap it. bubblewrap: kill the sandbox's first process (the
    kernel then kills every process in its pid namespace) and let bwrap exit; otherwise kill the process group,
    then sweep what left it."""
    if proc.returncode is not None:
        return
    if bubblewrap:
        kill(children(proc.pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if not bubblewrap:
        sweep(proc.pid, workdir, os.getuid() if _child_uid() is None else NOBODY)
    proc.wait()


def _execution(
    status: int, *, finished: bool, ended: bool, seconds: float, stdout: str, stderr: str, sandboxed: bool
) -> Execution:
    """The record of a run whose process ended with ``status`` (Popen's: negative for a signal); ``ended``: the
    runner reported that the program's code ran to its end (``sandbox_child``)."""
    exit_code, sig = (status, None) if status >= 0 else (None, -status)
    lines = stderr.strip().splitlines()
    if not finished or sig == signal.SIGXCPU:
        outcome = Outcome.TIMEOUT
    elif exit_code == 0 and ended:
        outcome = Outcome.PASSED
    elif lines and lines[-1].startswith("MemoryError"):
        outcome = Outcome.MEMORY
    else:
        outcome = Outcome.KILLED if sig is not None else Outcome.FAILED
    return Execution(outcome, exit_code, sig, seconds, stdout, stderr, sandboxed)


def _remove(workdir: Path) -> None:
    """Remove the run's folder, opening again first any folder the program locked (chmod 000)."""
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        with contextlib.suppress(OSError):
            os.chmod(workdir, 0o700)
        for root, dirs, _ in os.walk(workdir):  # top-down: each folder opened before it is listed
            for path in (os.path.join(root, name) for name in dirs):
                if not os.path.islink(path):
                    with contextlib.suppress(OSError):
                        os.chmod(path, 0o700)
        shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        log.warning("could not remove the sandbox folder %s", workdir)
