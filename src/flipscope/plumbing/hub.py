"""Data sets from the Hugging Face hub, asked for by name only (``hf:…``): never a silent fallback to another
source, and one clear error where the hub cannot be had."""

from __future__ import annotations

import os
from typing import Any

from flipscope.errors import FlipscopeError


def load_hub_dataset(dataset: str, config: str | None, split: str, *, asked_as: str, instead: str) -> Any:
    """``datasets.load_dataset(dataset, config, split=split)``; ``asked_as`` names what the user wrote,
    ``instead`` the offline alternative the error suggests."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        raise FlipscopeError(
            f"{asked_as} asks for the hub, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set",
            fix=f"unset it, or use {instead}",
        )
    try:
        import datasets  # optional: users with hub access install `datasets`
    except ImportError:
        raise FlipscopeError(
            f"{asked_as} needs the `datasets` library", fix=f"pip install datasets, or use {instead}"
        ) from None
    try:
        return datasets.load_dataset(dataset, config or None, split=split)
    except Exception as exc:  # network, hub or data set errors: say so, never switch sources
        raise FlipscopeError(
            f"{asked_as} could not be loaded from the hub: {exc}",
            fix=f"check the network / HF_ENDPOINT, or use {instead}",
        ) from exc
