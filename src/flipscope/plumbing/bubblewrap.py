"""bubblewrap's command line for one sandboxed program (``plumbing.sandbox``): its own pid, network, IPC and mount
namespaces; read-only /usr and the interpreter's prefix; a fresh /proc and /dev; size-bounded /tmp and working
folder; the program bound read-only; an environment of its own."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def bwrap_path(path: str) -> str | None:
    """Where ``bwrap`` is (PATH, then ``path``); None where it is not installed."""
    return shutil.which("bwrap") or shutil.which("bwrap", path=path)


def bubblewrap_args(
    workdir: Path, program: Path, interpreter: Path, *, env: dict[str, str], scratch_bytes: int, path: str
) -> list[str]:
    """bubblewrap's command line for ``program`` (bound read-only) run in ``workdir`` by ``interpreter`` with only
    ``env``; ``path`` is where ``bwrap`` is looked for besides PATH. Root runs it without a user namespace (so the
    launcher can become uid 65534, a real unprivileged uid that RLIMIT_NPROC binds) keeping only
    CAP_SETUID/CAP_SETGID for that step."""
    root = os.geteuid() == 0
    unshare = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    args = [str(bwrap_path(path)), *(unshare if root else ["--unshare-all"]), "--die-with-parent", "--new-session"]
    args += ["--clearenv", *[a for key, value in env.items() for a in ("--setenv", key, value)]]
    args += ["--ro-bind", "/usr", "/usr", *_system_links()]
    for top in _interpreter_roots(interpreter):
        args += [*_parents(top), "--ro-bind", str(top), str(top)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    size = ["--size", str(scratch_bytes), "--perms", "1777"]
    args += [*size, "--tmpfs", "/tmp", *_parents(workdir), *size, "--tmpfs", str(workdir)]
    args += ["--ro-bind", str(program), str(program), "--chdir", str(workdir)]
    if root:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args


def _interpreter_roots(interpreter: Path) -> list[Path]:
    """What to bind besides /usr for the interpreter to run: its prefix (the standard library) and its folder."""
    roots: list[Path] = []
    for path in (Path(sys.base_prefix).resolve(), interpreter.parent):
        if not path.is_relative_to("/usr") and not any(path.is_relative_to(root) for root in roots):
            roots.append(path)
    return roots


def _system_links() -> list[str]:
    """/bin, /lib… as the sandbox needs them: links into /usr stay links, real folders are bound read-only."""
    args: list[str] = []
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _parents(path: Path) -> list[str]:
    """Folders above ``path`` that the sandbox lacks, made enterable (0755) so uid 65534 reaches ``path``."""
    args: list[str] = []
    for parent in reversed(path.parents[:-1]):
        if not (parent.is_relative_to("/usr") or parent.is_relative_to("/tmp")):
            args += ["--perms", "0755", "--dir", str(parent)]
    return args
