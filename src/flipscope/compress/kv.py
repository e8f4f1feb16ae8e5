"""KV-cache quantization, simulated: keys and values are quantize-dequantized per head and per token.

The quantization sits inside attention, after rotary embeddings and after the cache update, so every key and value
that attention reads (the cached past and the current token alike) has been through the quantizer, exactly as
with a quantized cache. It is idempotent: a cached value that is quantized again comes back unchanged, because
its row's min and max are grid points. It wraps whichever attention implementation the model had (sdpa, eager).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_KV_ARGS = re.compile(r"^int(?P<bits>\d+)$")
_IMPLEMENTATION = "flipscope_kv_quant"


@register
@dataclass(frozen=True)
class KVCacheConfig(CompressionConfig):
    """Asymmetric min-max quantization of the attention keys and values, per head and per token: kv:int8, kv:int4."""

    method: ClassVar[str] = "kv"
    syntax: ClassVar[str] = "kv:int<bits 2-8>"
    saveable: ClassVar[bool] = False
    bits: int = 8

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise FlipscopeError(f"kv bits must be 2–8, got {self.bits}", fix=f"write {self.syntax}, e.g. kv:int8")

    @classmethod
    def parse(cls, args: str) -> KVCacheConfig:
        match = _KV_ARGS.match(args.strip().lower())
        if not match:
            raise FlipscopeError(f"cannot read kv arguments {args!r}", fix=f"write {cls.syntax}, e.g. kv:int4")
        return cls(bits=int(match.group("bits")))

    def label(self) -> str:
        return f"kv:int{self.bits}"


def fake_quantize_rows(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric quantize-dequantize along the last axis. x: [B, H, T, D] → same shape, one scale per [B, H, T]."""
    import torch

    levels = 2**bits - 1
    xf = x.float()
    lo = xf.amin(dim=-1, keepdim=True)  # [B, H, T, 1]
    hi = xf.amax(dim=-1, keepdim=True)
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((xf - lo) / scale), 0, levels)
    return (q * scale + lo).to(x.dtype)


def _quantized_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    # key, value: [B, H_kv, T, D]
    bits, name = module._flipscope_kv_bits, module._flipscope_kv_inner
    if name in ALL_ATTENTION_FUNCTIONS:
        inner = ALL_ATTENTION_FUNCTIONS[name]
    else:  # "eager": the model's own module-level function
        inner = sys.modules[type(module).__module__].eager_attention_forward
    return inner(
        module, query, fake_quantize_rows(key, bits), fake_quantize_rows(value, bits), attention_mask, *args, **kwargs
    )


@apply_compression.register(KVCacheConfig)
def _apply_kv(
    config: KVCacheConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    net: Any = model
    current = str(net.config._attn_implementation or "eager")
    if current.startswith(_IMPLEMENTATION):
        raise FlipscopeError("kv quantization is applied twice to one model", fix="give one kv:<bits> per spec")
    if (current not in ALL_ATTENTION_FUNCTIONS and current != "eager") or current not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise FlipscopeError(f"kv quantization cannot wrap attention implementation {current!r}")
    # One name per wrapped implementation, registered with that implementation's mask builder: an unknown name
    # would make transformers build no attention mask at all (wrong with padding or a cached prefix).
    name = f"{_IMPLEMENTATION}_{current}"
    AttentionInterface.register(name, _quantized_attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[current])
    touched = 0
    for module in model.modules():
        if hasattr(module, "k_proj") and hasattr(module, "v_proj"):
            module._flipscope_kv_bits = config.bits  # type: ignore[assignment]
            module._flipscope_kv_inner = current  # type: ignore[assignment]
            touched += 1
    if not touched:
        raise FlipscopeError(f"found no attention layers with k_proj/v_proj in {type(model).__name__}")
    net.set_attn_implementation(name)
    return {"library": "flipscope", "attention_layers": touched, "inner": current, "granularity": "per head, per token"}
