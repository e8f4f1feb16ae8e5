"""Where flipscope keeps what it downloads and computes once (wheels, converted models, baselines)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from flipscope.plumbing.atomic import write_atomically


def cache_root() -> Path:
    """``$FLIPSCOPE_CACHE``, else ``$XDG_CACHE_HOME/flipscope``, else ``~/.cache/flipscope``."""
    env = os.environ.get("FLIPSCOPE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flipscope"


def content_hash(obj: Any) -> str:
    """A stable short hash of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoised in a sidecar keyed by (size, mtime) so big weights hash once."""
    stat = path.stat()
    memo = cache_root() / "hashes" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24] + ".json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if memo.exists():
        try:
            saved = json.loads(memo.read_text())
            if saved.get("key") == key:
                return str(saved["sha256"])
        except (OSError, ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "sha256": value})
    write_atomically(memo, lambda tmp: tmp.write_text(text))
    return value


#: The longest file name and path the usual file systems take (bytes); longer ones make ``stat`` raise.
NAME_MAX, PATH_MAX = 255, 4096


def user_path(text: str) -> Path:
    """A path as a user typed it, ``~`` expanded where a home directory is known (``~name`` of an unknown user,
    or no home at all, stays as typed rather than failing). A name no file system takes (a part over 255 bytes,
    a NUL) is a clear error here, not an OSError from the first ``exists()``."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:
        path = Path(text)
    raw = os.fsencode(path)
    if b"\0" in raw or len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        from flipscope.errors import FlipscopeError

        shown = text if len(text) <= 60 else text[:57] + "…"
        raise FlipscopeError(
            f"{shown!r} cannot be a file name (a part longer than {NAME_MAX} bytes, or a NUL character)",
            fix="check the path or spec you typed",
        )
    return path
