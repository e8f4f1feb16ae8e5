"""Units of attribution: a model's Linear layers grouped by decoder block, by module kind (q/k/v/o/gate/up/down
across all blocks, or across spans of consecutive blocks), or one by one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from flipscope.errors import FlipscopeError

_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")


class UnitKind(StrEnum):
    BLOCK = "block"
    MODULE = "module"
    LINEAR = "linear"


@dataclass(frozen=True)
class Unit:
    name: str  # "block 3", "v_proj", "v_proj blocks 0-4", or the Linear's own name
    linears: tuple[str, ...]
    params: int  # weights in its Linear layers


def block_of(linear: str) -> int | None:
    match = _BLOCK.search(linear)
    return int(match.group(1)) if match else None


def kind_of(linear: str) -> str:
    return linear.rsplit(".", 1)[-1]


def check_span(by: UnitKind | str, span: int | None) -> UnitKind:
    """``by`` as a UnitKind; a ``span`` it cannot have refused (before anything is measured)."""
    by = UnitKind(by)
    if span is not None and by is not UnitKind.MODULE:
        raise FlipscopeError(f"--span groups module kinds over blocks; --by {by} has no spans", fix="use --by module")
    if span is not None and span < 1:
        raise FlipscopeError(f"--span must be 1 or more, got {span}")
    return by


def make_units(linears: Iterable[tuple[str, int]], by: UnitKind | str, *, span: int | None = None) -> list[Unit]:
    """``linears``: (name, number of weights) of every Linear layer a method compresses, in model order; ``span``
    (with ``by`` module): consecutive blocks per unit (None: all blocks)."""
    by = check_span(by, span)
    groups: dict[str, list[tuple[str, int]]] = {}
    spans: dict[str, list[int]] = {}  # a span's key → the blocks it holds
    for name, size in linears:
        block = block_of(name)
        if by is UnitKind.LINEAR:
            key = name
        elif by is UnitKind.MODULE:
            key = kind_of(name)
            if span is not None and block is not None:
                key = f"{key} from block {block - block % span}"
                spans.setdefault(key, []).append(block)
        else:
            key = f"block {block}" if block is not None else name
        groups.setdefault(key, []).append((name, size))
    if not groups:
        raise FlipscopeError("the model has no Linear layers to attribute to")
    return [Unit(_span_name(members[0][0], spans[key]) if key in spans else key, tuple(n for n, _ in members),
                 sum(s for _, s in members)) for key, members in groups.items()]  # fmt: skip


def _span_name(linear: str, blocks: list[int]) -> str:
    """A span's name says the blocks it holds ("v_proj blocks 25-29"; "v_proj block 30" where the blocks run out)."""
    first, last = min(blocks), max(blocks)
    return f"{kind_of(linear)} blocks {first}-{last}" if last > first else f"{kind_of(linear)} block {first}"
