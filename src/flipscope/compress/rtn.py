"""Round-to-nearest (RTN) weight-only quantize-dequantize of Linear layers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_RTN_ARGS = re.compile(r"^w(?P<bits>\d+)(?:g(?P<group>\d+))?$")
_RTN_HELP = "write rtn:w<bits>[g<group>][,asym][,lm_head], e.g. rtn:w8, rtn:w4g64, rtn:w3g64,asym"


@register
@dataclass(frozen=True)
class RTNConfig(CompressionConfig):
    """Round-to-nearest weight-only quantization of Linear layers: rtn:w<bits 2-8>[g<group>][,asym][,lm_head].

    ``group_size`` None means one scale per output channel; lm_head is excluded by default.
    """

    method: ClassVar[str] = "rtn"
    syntax: ClassVar[str] = "rtn:w<bits 2-8>[g<group>][,asym][,lm_head]"
    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True
    include_lm_head: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise FlipscopeError(f"rtn bits must be 2–8, got {self.bits}", fix=_RTN_HELP)
        if self.group_size is not None and self.group_size < 1:
            raise FlipscopeError(f"rtn group size must be ≥ 1, got {self.group_size}", fix=_RTN_HELP)

    @classmethod
    def parse(cls, args: str) -> RTNConfig:
        head, *flags = [part.strip() for part in args.split(",")] if args else [""]
        match = _RTN_ARGS.match(head.lower())
        if not match:
            raise FlipscopeError(f"cannot read rtn arguments {args!r}", fix=_RTN_HELP)
        symmetric, lm_head = True, False
        for flag in flags:
            if flag == "asym":
                symmetric = False
            elif flag == "sym":
                symmetric = True
            elif flag == "lm_head":
                lm_head = True
            else:
                raise FlipscopeError(f"unknown rtn flag {flag!r}", fix=_RTN_HELP)
        group = match.group("group")
        return cls(
            bits=int(match.group("bits")),
            group_size=int(group) if group else None,
            symmetric=symmetric,
            include_lm_head=lm_head,
        )

    def label(self) -> str:
        text = f"rtn:w{self.bits}" + (f"g{self.group_size}" if self.group_size else "")
        if not self.symmetric:
            text += ",asym"
        if self.include_lm_head:
            text += ",lm_head"
        return text


def quantize_dequantize(weight: torch.Tensor, config: RTNConfig) -> torch.Tensor:
    """RTN fake-quantization of a 2-D weight; every output is within half a step of its input.

    weight: [out, in]; groups run along ``in`` (the last group may be shorter).
    """
    import torch

    out_features, in_features = weight.shape
    group = config.group_size or in_features
    pad = (-in_features) % group
    w = weight.detach().to(torch.float32)
    if pad:
        # Pad with each row's last value: it lies in the short last group, so its range does not widen.
        w = torch.cat([w, w[:, -1:].expand(out_features, pad)], dim=1)
    w = w.reshape(out_features, -1, group)  # [out, n_groups, group]
    if config.symmetric:
        qmax = 2 ** (config.bits - 1) - 1
        scale = w.abs().amax(dim=-1, keepdim=True) / qmax  # [out, n_groups, 1]
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        deq = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    else:
        levels = 2**config.bits - 1
        lo = w.amin(dim=-1, keepdim=True)
        hi = w.amax(dim=-1, keepdim=True)
        scale = (hi - lo) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(w / scale) + zero, 0, levels)
        deq = (q - zero) * scale
    deq = deq.reshape(out_features, -1)[:, :in_features]
    return deq.to(weight.dtype)


@apply_compression.register(RTNConfig)
def _apply_rtn(config: RTNConfig, model: torch.nn.Module, context: CompressionContext | None = None) -> dict[str, Any]:
    import torch

    touched, sq_err, sq_norm = 0, 0.0, 0.0
    with torch.no_grad():
        for _, module in linear_layers(model, include_lm_head=config.include_lm_head):
            new = quantize_dequantize(module.weight, config)
            sq_err += float((new.float() - module.weight.float()).pow(2).sum())
            sq_norm += float(module.weight.float().pow(2).sum())
            module.weight.copy_(new)
            touched += 1
    return {
        "library": "flipscope",
        "layers": touched,
        "relative_weight_error": (sq_err / sq_norm) ** 0.5 if sq_norm else 0.0,
    }
