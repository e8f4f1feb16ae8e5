"""Hand-made recipes written as plan files, so a recipe and an advised plan compare on the same terms: llama.cpp's
Q4_K_M allocation (4-bit everywhere, 6-bit attention V and FFN down in the blocks its ``use_more_bits`` picks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flipscope.attribution.units import block_of, kind_of
from flipscope.compress import RTNConfig
from flipscope.compress.plan import average_bits, write_plan
from flipscope.errors import FlipscopeError
from flipscope.models import parse_spec


def more_bits(block: int, blocks: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the blocks, and every third block between."""
    return block < blocks // 8 or block >= 7 * blocks // 8 or (block - blocks // 8) % 3 == 2


def q4_k_m_style(linears: list[str], *, base: RTNConfig, more: RTNConfig) -> dict[str, RTNConfig]:
    """llama.cpp's Q4_K_M allocation as a plan: ``base`` everywhere, ``more`` for attention V and FFN down in the
    blocks ``more_bits`` picks (llama.cpp: Q4_K base, Q6_K there)."""
    blocks = 1 + max((block_of(n) or 0) for n in linears)
    return {n: more if kind_of(n) in ("v_proj", "down_proj") and more_bits(block_of(n) or 0, blocks) else base
            for n in linears}  # fmt: skip


def write_recipe(baseline: str, recipe: str, *, out: str | Path, group_size: int | None = 64) -> tuple[Path, float]:
    """A recipe as a plan file for ``baseline``'s layers; returns the file and its average bits per weight."""
    if recipe.lower() != "q4_k_m":
        raise FlipscopeError(f"unknown recipe {recipe!r}", fix="use q4_k_m")
    from flipscope.compress.layers import linear_layers
    from flipscope.models import LoadOptions, load_backend

    backend: Any = load_backend(parse_spec(baseline), LoadOptions(device="cpu"))
    try:
        modules = dict(linear_layers(backend.model))
    finally:
        backend.close()
    widths = q4_k_m_style(list(modules), base=RTNConfig(bits=4, group_size=group_size),
                          more=RTNConfig(bits=6, group_size=group_size))  # fmt: skip
    avg = average_bits(modules, widths)
    path = write_plan(Path(out), RTNConfig(bits=4, group_size=group_size), widths, made_by="flipscope recipe q4_k_m",
                      baseline=baseline, avg_bits=avg)  # fmt: skip
    return path, avg
