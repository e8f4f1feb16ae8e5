"""Where an ``hf:`` location's files are (a local folder, or a hub id and the revision it resolves to) and its
config.json, read without loading weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.plumbing.cache import user_path

log = logging.getLogger(__name__)


def hf_folder(location: str) -> Path | None:
    """The local folder an ``hf:`` location names, or None for a hub id; an error for a missing local path."""
    path = user_path(location)
    if path.is_dir():
        return path
    if location.startswith((".", "/", "~")) or location.count("/") > 1 or path.exists():
        raise FlipscopeError(
            f"model folder {location} does not exist or is not a folder",
            fix="give a folder with config.json and weights, or a hub id like org/name",
        )
    return None


def hub_revision(repo: str) -> str:
    """The commit a hub id resolves to now (asked of the hub, else the local hub cache's snapshot): cached results
    are keyed by it, so a model updated on the hub is never matched with results of its earlier weights."""
    import huggingface_hub

    try:
        sha = huggingface_hub.model_info(repo).sha
        if sha:
            return str(sha)
    except Exception as exc:  # offline, private, or unknown: fall back to what the local hub cache holds
        log.info("hub revision of %s not resolved online (%s); trying the local hub cache", repo, exc)
    try:
        return Path(huggingface_hub.snapshot_download(repo, local_files_only=True)).name
    except Exception as exc:
        raise FlipscopeError(
            f"hf:{repo}: cannot resolve which revision of this hub model to use ({exc})",
            fix="check the network / HF_ENDPOINT / HF_TOKEN, or give a local folder as hf:/path/to/model",
        ) from exc


def read_config(location: str) -> dict[str, Any] | None:
    folder = hf_folder(location)
    if folder is None:
        return None  # a hub id: its config is not read without loading
    path = folder / "config.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FlipscopeError(f"cannot read {path}: {exc}", fix="repair or replace config.json") from exc
        return loaded if isinstance(loaded, dict) else None
    return None
