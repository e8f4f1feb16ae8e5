"""Where flipscope keeps what it downloads and computes once (wheels, converted models, baselines)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


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
    memo.write_text(json.dumps({"key": key, "sha256": value}))
    return value


def user_path(text: str) -> Path:
    """A path as a user typed it, ``~`` expanded where a home directory is known (``~name`` of an unknown user,
    or no home at all, stays as typed rather than failing)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)
