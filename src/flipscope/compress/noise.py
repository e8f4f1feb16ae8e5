"""Gaussian noise on Linear weights, relative to each weight's standard deviation: the paper's control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch


@register
@dataclass(frozen=True)
class NoiseConfig(CompressionConfig):
    """Weights + sigma · std(weight) · N(0, 1), per Linear layer, seeded: noise:0.01[,seed=3]."""

    method: ClassVar[str] = "noise"
    syntax: ClassVar[str] = "noise:<sigma>[,seed=<n>]"
    sigma: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise FlipscopeError(f"noise sigma must be ≥ 0, got {self.sigma}", fix=f"write {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> NoiseConfig:
        head, *rest = [part.strip() for part in args.split(",")]
        try:
            sigma = float(head)
            seed = int(rest[0].removeprefix("seed=")) if rest else 0
        except ValueError as exc:
            raise FlipscopeError(f"cannot read noise arguments {args!r}", fix=f"write {cls.syntax}") from exc
        return cls(sigma=sigma, seed=seed)

    def label(self) -> str:
        return f"noise:{self.sigma:g}" + (f",seed={self.seed}" if self.seed else "")


@apply_compression.register(NoiseConfig)
def _apply_noise(
    config: NoiseConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    touched = 0
    with torch.no_grad():
        for _, module in linear_layers(model):
            if config.sigma:
                w = module.weight
                noise = torch.randn(w.shape, generator=generator, dtype=torch.float32)  # [out, in]
                w.add_((noise * config.sigma * float(w.float().std())).to(w.dtype).to(w.device))
            touched += 1
    return {"library": "flipscope", "layers": touched}
