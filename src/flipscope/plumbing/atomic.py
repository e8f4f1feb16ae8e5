"""Files and locks.

Every file flipscope writes appears whole, by a rename: ``write_atomically`` builds it (a file, or a folder of
files) under a temporary name of this process (``<target>.<host>-<pid>.part``, unique across machines that share a
folder), flushes it to disk (``fsync`` of every file and folder in it), renames it into place (a rename is atomic)
and flushes the folder that now names it. A reader
sees the old file or the whole new one; a killed process, or a machine that loses power, leaves at most its own
``.part``, never part of a file under the final name.

Locks are advisory (``fcntl.flock``) on a lock file that holds its holder's pid: the kernel releases the lock of a
killed process. ``exclusive(target)`` holds ``<target>.lock``; a process that waits for one longer than
``WAIT_WARNING_S`` logs a warning saying what it waits for and which pid holds it. ``write_once`` makes a cache
entry once, by one process: under the lock it checks for the entry and writes it; a second process asking for the
same entry waits for the first and then finds it made."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _process_name() -> str:
    """This process among all that may share a folder (a cluster's shared file system): host and pid (pids repeat
    across machines); read at each call, since a forked child has a pid of its own."""
    return f"{socket.gethostname().replace('/', '_')}-{os.getpid()}"


#: A process waiting this long for a lock says so (what it waits for, which pid holds it).
WAIT_WARNING_S = 3.0
_POLL_S = 0.05


class LockHeld(Exception):
    """The lock is held by another process (``holder``: its pid as the lock file names it, or "unknown")."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by pid {holder}")


class FileLock:
    """An advisory lock on the file ``path`` (created where missing); its holder writes its pid into it.
    ``what`` names what the lock guards, for the message of a process that waits."""

    def __init__(self, path: Path, *, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self, *, wait: bool = True) -> None:
        """Take the lock; while another process holds it, wait (after ``WAIT_WARNING_S``, saying so), or with
        ``wait=False`` raise :class:`LockHeld` at once. A lock file its holder deleted while this one waited
        (``release(remove=True)``) guards nothing any more: the lock is taken again on the file now at ``path``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = [time.monotonic() + WAIT_WARNING_S]  # one warning, however often the file is opened again
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._wait(fd, wait=wait, deadline=deadline)
                if _names(fd, self.path):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        self._fd = fd

    def _wait(self, fd: int, *, wait: bool, deadline: list[float]) -> None:
        import fcntl

        while not _try_lock(fd):
            if not wait:
                raise LockHeld(self.path, _holder(fd))
            if time.monotonic() >= deadline[0]:
                log.warning(
                    "waiting for %s: another process (pid %s) holds its lock %s; this one goes on when it is done",
                    self.what, _holder(fd), self.path,
                )  # fmt: skip
                deadline[0] = float("inf")
                fcntl.flock(fd, fcntl.LOCK_EX)
                return
            time.sleep(_POLL_S)

    def release(self, *, remove: bool = False) -> None:
        """Let the lock go (``remove``: and delete its file first, while still held, for a lock no one needs after
        this; a process waiting on the deleted file then takes the lock on a new one)."""
        import fcntl

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not deleted or replaced since it was opened)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def exclusive(target: Path, *, what: str | None = None, remove: bool = False) -> Iterator[None]:
    """Hold the lock of ``target`` (``<target>.lock``), waiting while another process holds it; ``remove``: delete
    the lock file when done (``target`` was deleted under it)."""
    lock = FileLock(target.with_name(target.name + ".lock"), what=what or str(target))
    lock.acquire()
    try:
        yield
    finally:
        lock.release(remove=remove)


def temporary(target: Path) -> Path:
    """A temporary name beside ``target`` that no other process uses."""
    return target.with_name(f"{target.name}.{_process_name()}.part")


def write_atomically(target: Path, write: Callable[[Path], object], *, replace_folder: bool = False) -> Path:
    """``target`` (a file or a folder) written by ``write(tmp)`` under a temporary name of this process, flushed to
    disk, then renamed into place: a reader sees the old one or the whole new one, never part of it (no lock: one
    writer per target). A folder takes the place of an empty one, or with ``replace_folder`` of any: the two are
    exchanged in one step (Linux ``renameat2``), else the old one is renamed aside and the new one renamed in (the
    name is missing between the two renames, never while the old folder is deleted), and the old one deleted last."""
    tmp = temporary(target)
    _remove(tmp)
    old: Path | None = None  # the replaced folder, under the name it has until it is deleted
    try:
        write(tmp)
        _sync(tmp)
        if replace_folder and target.is_dir() and tmp.is_dir():  # a rename replaces only an empty folder
            if _exchange(tmp, target):
                old = tmp
            else:
                old = target.with_name(f"{target.name}.{_process_name()}.old")
                _remove(old)
                os.replace(target, old)
        if old is not tmp:
            os.replace(tmp, target)
    except BaseException:
        if old is not None and old is not tmp and not target.exists():
            os.replace(old, target)  # renamed aside, the new one not in: the old one goes back
        _remove(tmp)
        raise
    _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)  # the folder that now names it
    if old is not None:
        _remove(old)
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or file system cannot."""
    import ctypes
    import errno

    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _renameat2() -> Any:
    import ctypes

    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def write_once(target: Path, make: Callable[[Path], None], *, done: Callable[[Path], bool] | None = None) -> Path:
    """``target``, made by ``make(tmp)`` (a file or a folder at ``tmp``) unless it is there already (``done``,
    default: it exists) — checked again under the lock, so two processes never make it twice."""
    with exclusive(target):
        if not (done or Path.exists)(target):
            write_atomically(target, make, replace_folder=True)
    return target


def _sync(path: Path) -> None:
    """Flush ``path`` to disk: a file's bytes, or a folder's files and sub-folders and then its own entries."""
    if path.is_symlink():
        return
    if path.is_dir():
        for child in path.iterdir():
            _sync(child)
        _fsync(path, os.O_RDONLY | os.O_DIRECTORY)
    elif path.is_file():
        _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:
        if not flags & os.O_DIRECTORY:
            raise  # some file systems cannot flush a folder; every one flushes a file
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
