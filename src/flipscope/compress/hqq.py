"""Half-Quadratic Quantization through the hqq library (quantize, then dequantize into the Linear weights)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register, require
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

HQQ_PIP = "hqq==0.2.8.post1"
_BITS = (8, 4, 3, 2)


@register
@dataclass(frozen=True)
class HQQConfig(CompressionConfig):
    """HQQ weight quantization (hqq library, no calibration data): hqq:w4g64."""

    method: ClassVar[str] = "hqq"
    syntax: ClassVar[str] = "hqq:w{8,4,3,2}g<group>"
    bits: int = 4
    group_size: int = 64

    def __post_init__(self) -> None:
        if self.bits not in _BITS or self.group_size < 1:
            raise FlipscopeError(f"invalid hqq setting w{self.bits}g{self.group_size}", fix=f"write {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> HQQConfig:
        match = re.match(r"^w(\d+)g(\d+)$", args.strip().lower())
        if not match:
            raise FlipscopeError(f"cannot read hqq arguments {args!r}", fix=f"write {cls.syntax}")
        return cls(bits=int(match.group(1)), group_size=int(match.group(2)))

    def label(self) -> str:
        return f"hqq:w{self.bits}g{self.group_size}"


@apply_compression.register(HQQConfig)
def _apply_hqq(config: HQQConfig, model: torch.nn.Module, context: CompressionContext | None = None) -> dict[str, Any]:
    import torch

    quantize = require("hqq.core.quantize", method=config.label(), pip=HQQ_PIP)
    settings = quantize.BaseQuantizeConfig(nbits=config.bits, group_size=config.group_size)
    touched = 0
    with torch.no_grad():
        for name, module in linear_layers(model):
            if module.weight.numel() % config.group_size:
                raise FlipscopeError(
                    f"layer {name} has {module.weight.numel()} weights, not a multiple of group {config.group_size}",
                    fix="choose a group size that divides every layer's width",
                )
            q = quantize.HQQLinear(
                module,
                quant_config=settings,
                compute_dtype=torch.float32,
                device=str(module.weight.device),
                del_orig=False,
            )
            module.weight.copy_(q.dequantize().reshape(module.weight.shape).to(module.weight.dtype))
            touched += 1
    return {"library": f"hqq {metadata.version('hqq')}", "layers": touched}
