"""llama.cpp's block formats (Q8_0, Q5_0, Q5_1, Q4_0, Q4_1) applied to Linear weights through the ``gguf`` package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress._base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress._layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

GGML_TYPES = ("Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1")
BLOCK = 32  # every one of these formats quantizes blocks of 32 weights along a row


@register
@dataclass(frozen=True)
class GGMLConfig(CompressionConfig):
    """llama.cpp block quantization of Linear weights (quantize, then dequantize): ggml:Q4_0 and friends."""

    method: ClassVar[str] = "ggml"
    syntax: ClassVar[str] = "ggml:{" + ",".join(GGML_TYPES) + "}"
    qtype: str = "Q8_0"

    def __post_init__(self) -> None:
        if self.qtype not in GGML_TYPES:
            raise FlipscopeError(f"unknown ggml type {self.qtype!r}", fix=f"use {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> GGMLConfig:
        return cls(qtype=args.strip().upper())

    def label(self) -> str:
        return f"ggml:{self.qtype}"

    @property
    def group_size(self) -> int:
        """Every llama.cpp block format here packs 32 weights of a row per block."""
        return 32


@apply_compression.register(GGMLConfig)
def _apply_ggml(
    config: GGMLConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[config.qtype]
    touched = 0
    with torch.no_grad():
        for name, module in linear_layers(model):
            weight = module.weight.detach().float().cpu().numpy()  # [out, in]
            if weight.shape[1] % BLOCK:
                raise FlipscopeError(
                    f"layer {name} has {weight.shape[1]} inputs, not a multiple of {BLOCK}",
                    fix="ggml block formats need rows in whole blocks of 32; use rtn for this model",
                )
            restored = quants.dequantize(quants.quantize(weight, qtype), qtype)
            module.weight.copy_(torch.from_numpy(restored).to(module.weight.dtype))
            touched += 1
    return {"library": f"gguf {metadata.version('gguf')}", "layers": touched}
