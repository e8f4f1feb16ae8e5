"""GPTQ (Frantar et al., 2023): weight quantization with column-by-column error feedback through the inverse Hessian.

For each Linear layer, H = 2/n · Σ x xᵀ over its calibration inputs. Columns are quantized in order (or in order of
decreasing diag(H) with ``act_order``); each column's rounding error is spread over the columns not yet quantized
through the upper Cholesky factor of H⁻¹, in blocks of 128 columns. Group scales are set when a group's first
column is reached, from the weights as updated so far. Blocks are calibrated in order: block i sees the inputs that
the already quantized blocks 0..i-1 produce. The grid is the reference one: 2^bits levels, min-max per row or
group, symmetric about a mid-level zero point by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.calibration import CALIBRATION_SOURCE, calibration_batch, check_calibration
from flipscope.compress.capture import BlockInputs, block_linears
from flipscope.compress.layers import decoder_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_ARGS = re.compile(r"^w(?P<bits>\d+)(?:g(?P<group>\d+))?$")
_HELP = "write gptq:w<bits 2-8>[g<group>][,act][,asym][,damp=0.01], e.g. gptq:w4g128"


@register
@dataclass(frozen=True)
class GPTQConfig(CompressionConfig):
    """GPTQ with calibration text: gptq:w<bits>[g<group>][,act][,asym][,damp=<fraction of mean diag(H)>]."""

    method: ClassVar[str] = "gptq"
    syntax: ClassVar[str] = "gptq:w<bits 2-8>[g<group>][,act][,asym][,damp=0.01]"
    bits: int = 4
    group_size: int | None = 128
    act_order: bool = False
    symmetric: bool = True
    damp: float = 0.01
    samples: int = 32
    length: int = 256

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise FlipscopeError(f"gptq bits must be 2–8, got {self.bits}", fix=_HELP)
        if self.group_size is not None and self.group_size < 1:
            raise FlipscopeError(f"gptq group size must be ≥ 1, got {self.group_size}", fix=_HELP)
        if not 0 < self.damp < 1:
            raise FlipscopeError(f"gptq damp must be in (0, 1), got {self.damp}", fix=_HELP)
        check_calibration(self.samples, self.length, "gptq")

    @classmethod
    def parse(cls, args: str) -> GPTQConfig:
        head, *flags = [part.strip() for part in args.split(",")] if args else [""]
        match = _ARGS.match(head.lower())
        if not match:
            raise FlipscopeError(f"cannot read gptq arguments {args!r}", fix=_HELP)
        values: dict[str, Any] = {"bits": int(match.group("bits"))}
        values["group_size"] = int(match.group("group")) if match.group("group") else None
        for flag in flags:
            if flag == "act":
                values["act_order"] = True
            elif flag in ("asym", "sym"):
                values["symmetric"] = flag == "sym"
            elif flag.startswith("damp="):
                try:
                    values["damp"] = float(flag.removeprefix("damp="))
                except ValueError as exc:
                    raise FlipscopeError(f"cannot read gptq {flag!r}", fix=_HELP) from exc
            else:
                raise FlipscopeError(f"unknown gptq flag {flag!r}", fix=_HELP)
        return cls(**values)

    def label(self) -> str:
        text = f"gptq:w{self.bits}" + (f"g{self.group_size}" if self.group_size else "")
        text += ",act" if self.act_order else ""
        text += ",asym" if not self.symmetric else ""
        return text + (f",damp={self.damp:g}" if self.damp != 0.01 else "")


def grid(w: torch.Tensor, bits: int, *, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max grid per row. w: [out, k] → scale, zero: [out, 1]; levels 0..2^bits-1."""
    import torch

    maxq = 2**bits - 1
    lo = torch.clamp(w.amin(dim=1, keepdim=True), max=0)
    hi = torch.clamp(w.amax(dim=1, keepdim=True), min=0)
    if symmetric:
        hi = torch.maximum(-lo, hi)
        lo = -hi
    empty = (lo == 0) & (hi == 0)
    lo, hi = torch.where(empty, -1.0, lo), torch.where(empty, 1.0, hi)
    scale = (hi - lo) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if symmetric else torch.round(-lo / scale)
    return scale, zero


def snap(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize on a grid. w: [out] or [out, k]; scale, zero broadcast against it."""
    import torch

    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, config: GPTQConfig, *, block: int = 128) -> torch.Tensor:
    """GPTQ of one layer. weight: [out, in]; hessian: [in, in] (2/n · XᵀX) → dequantized weight [out, in]."""
    import torch

    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    columns = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if config.act_order else None
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    h += config.damp * torch.mean(torch.diag(h)) * torch.eye(columns)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # [in, in]
    group = config.group_size
    scale, zero = grid(w, config.bits, symmetric=config.symmetric)
    out = torch.zeros_like(w)
    for i1 in range(0, columns, block):
        i2 = min(i1 + block, columns)
        w1 = w[:, i1:i2].clone()  # [out, b]
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if group and (i1 + i) % group == 0:
                scale, zero = grid(w[:, i1 + i : i1 + i + group], config.bits, symmetric=config.symmetric)
            col = w1[:, i]
            q = snap(col.unsqueeze(1), scale, zero, config.bits).squeeze(1)
            out[:, i1 + i] = q
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        out = out[:, torch.argsort(perm)]
    return out.to(weight.dtype)


@apply_compression.register(GPTQConfig)
def _apply_gptq(
    config: GPTQConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    context = context or CompressionContext()
    batch = calibration_batch(context.tokenizer, config.samples, config.length).to(context.device)
    touched, sq_err, sq_norm = 0, 0.0, 0.0
    blocks = decoder_layers(model)
    inputs = BlockInputs(model, batch, blocks)
    for block in blocks:
        linears = block_linears(block)
        sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in linears.items()}
        counts = dict.fromkeys(linears, 0)

        def add(name: str, x: torch.Tensor, sums: dict[str, Any] = sums, counts: dict[str, int] = counts) -> None:
            sums[name] += (x.T @ x).double().cpu()  # x: [tokens, in]
            counts[name] += x.shape[0]

        inputs.feed(block, linears, add)
        with torch.no_grad():
            for name, module in linears.items():
                hessian = (2 / max(counts[name], 1) * sums[name]).float()  # [in, in]
                new = gptq_quantize(module.weight.cpu(), hessian, config)
                sq_err += float((new.float() - module.weight.float().cpu()).pow(2).sum())
                sq_norm += float(module.weight.float().pow(2).sum())
                module.weight.copy_(new.to(module.weight.device))
                touched += 1
        inputs.advance(block)
    return {
        "library": "flipscope",
        "calibration": f"{CALIBRATION_SOURCE}, {config.samples}×{config.length} tokens",
        "layers": touched,
        "relative_weight_error": (sq_err / sq_norm) ** 0.5 if sq_norm else 0.0,
    }
