"""Files in the cache and run directories are made once, by one process: ``write_once`` holds an advisory lock
(``fcntl.flock`` on ``<target>.lock``) while it checks for the target, builds it under a temporary name of its own
(``<target>.<pid>.part``) and renames it into place (a rename is atomic). A second process asking for the same
target waits for the first and then finds it made; a killed process leaves only its own ``.part``, never a
half-written target, and its lock is released by the kernel."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (blocking while another process holds it)."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def temporary(target: Path) -> Path:
    """A temporary name beside ``target`` that no other process uses."""
    return target.with_name(f"{target.name}.{os.getpid()}.part")


def write_atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """``target`` written by ``write(tmp)`` under a temporary name of this process, then renamed into place: a
    reader sees the old file or the whole new one, never part of it (no lock: one writer per target)."""
    tmp = temporary(target)
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    os.replace(tmp, target)
    return target


def write_once(target: Path, make: Callable[[Path], None], *, done: Callable[[Path], bool] | None = None) -> Path:
    """``target``, made by ``make(tmp)`` (a file or a folder at ``tmp``) unless it is there already (``done``,
    default: it exists) — checked again under the lock, so two processes never make it twice."""
    with exclusive(target):
        if (done or Path.exists)(target):
            return target
        tmp = temporary(target)
        _remove(tmp)
        try:
            make(tmp)
        except BaseException:
            _remove(tmp)
            raise
        if target.is_dir() and tmp.is_dir():
            _remove(target)
        os.replace(tmp, target)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
