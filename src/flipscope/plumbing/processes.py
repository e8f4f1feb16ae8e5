"""Watching and ending child processes through /proc (Linux): output tails kept while a process runs, and the
sweep that kills everything a process started (its group, its session, its descendants, what works in its folder).
``plumbing.sandbox`` runs untrusted programs with these."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DRAIN_S = 2.0  # how long output is still read once every process is gone
POLL_S = 0.05  # the exit check's period where pidfd_open is missing


class Tail:
    """The last ``keep`` bytes of a stream."""

    def __init__(self, keep: int) -> None:
        self.keep, self.data = keep, bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.keep:
            del self.data[: len(self.data) - self.keep]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def pump(pid: int, selector: selectors.BaseSelector, tails: dict[int, Tail], deadline: float) -> bool:
    """Keep output until ``pid`` exits (True) or ``deadline`` passes (False); the process is left unreaped."""
    try:
        exit_fd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exit_fd = None
    if exit_fd is not None:
        selector.register(exit_fd, selectors.EVENT_READ)
    try:
        while not _exited(pid):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _read(selector, tails, left if exit_fd is not None else min(left, POLL_S))
        return True
    finally:
        if exit_fd is not None:
            selector.unregister(exit_fd)
            os.close(exit_fd)


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _read(selector: selectors.BaseSelector, tails: dict[int, Tail], timeout: float) -> None:
    """Read what is ready within ``timeout``; a pipe at its end leaves the selector."""
    for key, _ in selector.select(timeout):
        if key.fd in tails:
            chunk = os.read(key.fd, 1 << 16)
            if chunk:
                tails[key.fd].add(chunk)
            else:
                selector.unregister(key.fd)


def drain(selector: selectors.BaseSelector, tails: dict[int, Tail]) -> None:
    """Read the output left in the pipes once every writer is gone (for at most ``DRAIN_S``)."""
    deadline = time.monotonic() + DRAIN_S
    while selector.get_map() and (left := deadline - time.monotonic()) > 0:
        _read(selector, tails, left)


def kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep(leader: int, workdir: Path, uid: int) -> None:
    """Kill, until none is left, the processes of the programs' uid in the program's process group or session,
    started in its folder, or descended from one of those."""
    for _ in range(200):
        if not (found := family(leader, workdir, uid)):
            return
        kill(found)
        time.sleep(0.01)
    log.warning("processes of a sandboxed program may survive: %s", sorted(family(leader, workdir, uid)))


@dataclass(frozen=True)
class Process:
    """A live process as /proc shows it: its real uid (what RLIMIT_NPROC counts by), parent, group, session."""

    uid: int
    ppid: int
    pgrp: int
    session: int
    threads: int


def processes() -> dict[int, Process]:
    """The live processes (zombies left out), by pid."""
    found = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat, status = (_proc_file(f"{entry.path}/{name}") for name in ("stat", "status"))
                state, ppid, pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                uid, threads = int(fields["Uid"].split()[0]), int(fields["Threads"])
            except (OSError, ValueError, KeyError):
                continue
            if state != "Z":
                found[int(entry.name)] = Process(uid, int(ppid), int(pgrp), int(session), threads)
    return found


def _proc_file(path: str) -> str:
    with open(path, "rb") as file:  # faster than Path.read_text, which matters with thousands of processes
        return file.read().decode(errors="replace")


def family(leader: int, workdir: Path, uid: int) -> set[int]:
    """The processes of ``uid`` that the program started (see ``sweep``)."""
    procs = {pid: p for pid, p in processes().items() if p.uid == uid and pid != os.getpid()}
    family = {pid for pid, p in procs.items() if leader in (p.pgrp, p.session) or _started_in(pid, workdir)}
    while more := {pid for pid, p in procs.items() if p.ppid in family | {leader}} - family:
        family |= more
    return family


def _started_in(pid: int, workdir: Path) -> bool:
    """Whether ``pid`` works in the program's folder or still has the environment it was started with (its HOME
    is the folder): how a process that left the program's session and lost its parent is still found."""
    with contextlib.suppress(OSError):
        if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(workdir):
            return True
        return f"\0HOME={workdir}\0".encode() in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    return False


def children(pid: int) -> list[int]:
    return [child for child, p in processes().items() if p.ppid == pid]


def tasks_of(uid: int) -> int:
    """How many processes and threads ``uid`` runs now (what RLIMIT_NPROC counts), as far as /proc shows."""
    return sum(p.threads for p in processes().values() if p.uid == uid)
