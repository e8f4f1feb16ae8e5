"""A run function's settings object with the keywords its caller gave put in (``compare(b, c, limit=50)``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def with_overrides(settings: T, fields: dict[str, Any], *, command: str, expected: type[T] | None = None) -> T:
    """``settings`` with ``fields`` (names of its fields) replaced; a name that is no field is a one-line error, and so
    are settings that are no ``expected`` (another run's)."""
    if expected is not None and not isinstance(settings, expected):
        raise FlipscopeError(
            f"{command} takes a {expected.__name__} as its settings, not a {type(settings).__name__}",
            fix=f"pass a {expected.__name__}, or its fields as keywords",
        )
    valid = [f.name for f in dataclasses.fields(settings)]
    unknown = [name for name in fields if name not in valid]
    if unknown:
        raise FlipscopeError(
            f"{command} has no setting {', '.join(repr(name) for name in unknown)}",
            fix=f"use one of {', '.join(valid)}",
        )
    return dataclasses.replace(settings, **fields) if fields else settings
