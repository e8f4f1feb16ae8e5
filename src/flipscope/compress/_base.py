"""Compression methods: one typed config per method, parsed from a spec suffix, applied by type."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CompressionConfig:
    """Base of every method's config. ``method`` is the name used in specs (``+rtn:w4g128``)."""

    method: ClassVar[str] = ""

    @classmethod
    def parse(cls, args: str) -> CompressionConfig:  # pragma: no cover - overridden
        raise NotImplementedError

    def label(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


METHODS: dict[str, type[CompressionConfig]] = {}


def register(cls: type[CompressionConfig]) -> type[CompressionConfig]:
    METHODS[cls.method] = cls
    return cls


def parse_method(text: str) -> CompressionConfig:
    """``"rtn:w4g128"`` → ``RTNConfig(bits=4, group_size=128)``."""
    name, _, args = text.partition(":")
    cls = METHODS.get(name.strip().lower())
    if cls is None:
        known = ", ".join(sorted(METHODS)) or "none"
        raise FlipscopeError(
            f"unknown compression method {name!r} in {text!r}",
            fix=f"use one of: {known} (see `flipscope models`)",
        )
    return cls.parse(args.strip())


@functools.singledispatch
def apply_compression(config: CompressionConfig, model: torch.nn.Module) -> dict[str, Any]:
    """Compress ``model`` in place; returns statistics (layers touched, error). Dispatched by config type."""
    raise FlipscopeError(f"compression method {config.method!r} has no implementation for this backend")
