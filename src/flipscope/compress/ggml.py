"""llama.cpp quantization types. On an hf:/bundled: model the block formats Q8_0, Q5_0, Q5_1, Q4_0 and Q4_1 are
applied to the Linear weights through the ``gguf`` package (numpy, no llama.cpp needed); on a gguf: model every
llama.cpp type (K-quants and IQ4 too) is made by llama.cpp's own quantizer, see ``models/gguf_file.py``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

GGML_TYPES = ("Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1")
#: Types only llama.cpp makes (gguf: models): its ftype names without LLAMA_FTYPE_MOSTLY_.
LLAMA_CPP_TYPES = ("Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "IQ4_NL",
                   "IQ4_XS", "F16", "BF16")  # fmt: skip
BLOCK = 32  # every one of these formats quantizes blocks of 32 weights along a row


@register
@dataclass(frozen=True)
class GGMLConfig(CompressionConfig):
    """llama.cpp quantization types: ggml:Q4_0 on any model (Linear weights quantized, then dequantized); K-quants
    and IQ4 (ggml:Q4_K_M, …) on gguf: models, made by llama.cpp; ``,requant`` allows quantizing a quantized file.
    """

    method: ClassVar[str] = "ggml"
    syntax: ClassVar[str] = "ggml:{" + ",".join(GGML_TYPES) + "} (gguf: models also Q6_K, Q4_K_M, Q2_K, …)[,requant]"
    qtype: str = "Q8_0"
    requantize: bool = False

    def __post_init__(self) -> None:
        if self.qtype not in GGML_TYPES + LLAMA_CPP_TYPES:
            raise FlipscopeError(
                f"unknown ggml type {self.qtype!r}", fix=f"use one of {', '.join(GGML_TYPES + LLAMA_CPP_TYPES)}"
            )

    @classmethod
    def parse(cls, args: str) -> GGMLConfig:
        head, *flags = [part.strip() for part in args.split(",")]
        for flag in flags:
            if flag != "requant":
                raise FlipscopeError(f"unknown ggml flag {flag!r}", fix="the only flag is ,requant")
        return cls(qtype=head.upper(), requantize=bool(flags))

    def label(self) -> str:
        return f"ggml:{self.qtype}" + (",requant" if self.requantize else "")

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

    if config.qtype not in GGML_TYPES:
        raise FlipscopeError(
            f"{config.label()} is made by llama.cpp: it applies to gguf: models only",
            fix=f"use a gguf: baseline (gguf:smollm2-135m+{config.label()}), or one of {', '.join(GGML_TYPES)} here",
        )
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
