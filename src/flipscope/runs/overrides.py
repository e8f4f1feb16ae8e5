"""A run function's settings object with the keywords its caller gave put in (``compare(b, c, limit=50)``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def with_overrides(settings: T, fields: dict[str, Any], *, command: str) -> T:
    """``settings`` with ``fields`` (names of its fields) replaced; a name that is no field is a one-line error."""
    valid = [f.name for f in dataclasses.fields(settings)]
    unknown = [name for name in fields if name not in valid]
    if unknown:
        raise FlipscopeError(
            f"{command} has no setting {', '.join(repr(name) for name in unknown)}",
            fix=f"use one of {', '.join(valid)}",
        )
    return dataclasses.replace(settings, **fields) if fields else settings
