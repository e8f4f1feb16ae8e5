"""torchao's quantization configs applied with ``quantize_`` to the Linear layers (the output head excluded)."""

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

TORCHAO_PIP = "torchao==0.18.0"
SCHEMES = ("int8wo", "w8a8-dyn", "float8wo")
_INTX = re.compile(r"^intx-w(\d)g(\d+)$")


@register
@dataclass(frozen=True)
class TorchAOConfig(CompressionConfig):
    """torchao: int8 weight-only, dynamic int8 activations + int8 weights, float8 weight-only, or int2-8 per group."""

    method: ClassVar[str] = "torchao"
    syntax: ClassVar[str] = "torchao:{int8wo,w8a8-dyn,float8wo,intx-w<bits 2-8>g<group>}"
    saveable: ClassVar[bool] = False
    scheme: str = "int8wo"

    def __post_init__(self) -> None:
        match = _INTX.match(self.scheme)
        if self.scheme not in SCHEMES and not (match and 2 <= int(match.group(1)) <= 8 and int(match.group(2)) > 0):
            raise FlipscopeError(f"unknown torchao scheme {self.scheme!r}", fix=f"write {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> TorchAOConfig:
        return cls(scheme=args.strip().lower())

    def label(self) -> str:
        return f"torchao:{self.scheme}"

    @property
    def group_size(self) -> int | None:
        match = _INTX.match(self.scheme)
        return int(match.group(2)) if match else None

    def build(self) -> Any:
        import torch

        quant = require("torchao.quantization", method=self.label(), pip=TORCHAO_PIP)
        if self.scheme == "int8wo":
            return quant.Int8WeightOnlyConfig()
        if self.scheme == "w8a8-dyn":
            return quant.Int8DynamicActivationInt8WeightConfig()
        if self.scheme == "float8wo":
            return quant.Float8WeightOnlyConfig()
        match = _INTX.match(self.scheme)
        assert match is not None
        granularity = require("torchao.quantization.granularity", method=self.label(), pip=TORCHAO_PIP)
        return quant.IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{match.group(1)}"), granularity=granularity.PerGroup(int(match.group(2)))
        )


@apply_compression.register(TorchAOConfig)
def _apply_torchao(
    config: TorchAOConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    settings = config.build()
    quant = require("torchao.quantization", method=config.label(), pip=TORCHAO_PIP)
    chosen = {id(module) for _, module in linear_layers(model)}
    quant.quantize_(model, settings, filter_fn=lambda module, fqn: id(module) in chosen)
    return {
        "library": f"torchao {metadata.version('torchao')}",
        "layers": len(chosen),
        "config": type(settings).__name__,
    }
