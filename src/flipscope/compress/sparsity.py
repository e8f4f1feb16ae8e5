"""Weight pruning of Linear layers: unstructured by magnitude, and N:M structured (2:4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch


def check_sparsity(value: float, syntax: str) -> None:
    if not 0 <= value < 1:
        raise FlipscopeError(f"sparsity must be in [0, 1), got {value}", fix=f"write {syntax}")


def parse_sparsity(args: str, syntax: str) -> float:
    try:
        return float(args)
    except ValueError as exc:
        raise FlipscopeError(f"cannot read sparsity {args!r}", fix=f"write {syntax}") from exc


@register
@dataclass(frozen=True)
class MagnitudeConfig(CompressionConfig):
    """Zero the smallest-magnitude weights of each Linear layer: magnitude:0.5 (exactly that share per layer)."""

    method: ClassVar[str] = "magnitude"
    syntax: ClassVar[str] = "magnitude:<sparsity in [0, 1)>"
    sparsity: float = 0.5

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, self.syntax)

    @classmethod
    def parse(cls, args: str) -> MagnitudeConfig:
        return cls(sparsity=parse_sparsity(args, cls.syntax))

    def label(self) -> str:
        return f"magnitude:{self.sparsity:g}"


@register
@dataclass(frozen=True)
class NMConfig(CompressionConfig):
    """N:M structured sparsity: in every M consecutive inputs of a row keep the N largest: 2:4."""

    method: ClassVar[str] = "nm"
    syntax: ClassVar[str] = "<n>:<m>, e.g. 2:4"
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise FlipscopeError(f"N:M sparsity needs 0 < N < M, got {self.n}:{self.m}", fix="write e.g. 2:4")

    @classmethod
    def parse(cls, args: str) -> NMConfig:
        match = re.match(r"^(\d+):(\d+)$", args.strip())
        if not match:
            raise FlipscopeError(f"cannot read N:M sparsity {args!r}", fix="write e.g. 2:4")
        return cls(n=int(match.group(1)), m=int(match.group(2)))

    def label(self) -> str:
        return f"{self.n}:{self.m}"


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight is kept; exactly round(sparsity · numel) smallest |w| are dropped (ties by position)."""
    import torch

    flat = weight.detach().abs().flatten()
    drop = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if drop:
        keep[torch.argsort(flat, stable=True)[:drop]] = False
    return keep.view_as(weight)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """weight: [out, in], in divisible by m → mask keeping the n largest |w| of each group of m inputs."""
    import torch

    out_features, in_features = weight.shape
    groups = weight.detach().abs().reshape(out_features, in_features // m, m)  # [out, in/m, m]
    top = torch.topk(groups, n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(out_features, in_features)


def _prune(model: torch.nn.Module, mask_of: Any) -> dict[str, Any]:
    import torch

    kept, total, touched = 0, 0, 0
    with torch.no_grad():
        for name, module in linear_layers(model):
            mask = mask_of(name, module.weight)
            module.weight.mul_(mask.to(module.weight.dtype))
            kept += int(mask.sum())
            total += mask.numel()
            touched += 1
    return {"library": "flipscope", "layers": touched, "sparsity": 1 - kept / total}


@apply_compression.register(MagnitudeConfig)
def _apply_magnitude(
    config: MagnitudeConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    return _prune(model, lambda name, w: magnitude_mask(w, config.sparsity))


@apply_compression.register(NMConfig)
def _apply_nm(config: NMConfig, model: torch.nn.Module, context: CompressionContext | None = None) -> dict[str, Any]:
    def mask_of(name: str, weight: Any) -> Any:
        if weight.shape[1] % config.m:
            raise FlipscopeError(
                f"layer {name} has {weight.shape[1]} inputs, not a multiple of {config.m}",
                fix=f"choose M dividing every layer's width, or use magnitude:{config.n / config.m:g}",
            )
        return nm_mask(weight, config.n, config.m)

    return _prune(model, mask_of)
