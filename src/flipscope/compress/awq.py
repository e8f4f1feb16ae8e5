"""AWQ (Lin et al., 2024): activation-aware per-channel scaling, weight clipping, then grouped zero-point quantization.

Per block and per group of Linear layers that share an input (q/k/v after the input norm, gate/up after the
post-attention norm, down after up, o after v when their shapes match), a grid of 20 exponents r picks the
scales s = mean|x|^r / mean|ŵ|^(1-r) (normalised to geometric mean 1) that minimise the error of the group's
outputs on calibration inputs after quantizing W·diag(s); s is folded into the preceding norm or Linear, so the
float model is unchanged. Then each output channel's group range is clipped by the shrink (1 … 0.55) that
minimises that layer's output error (q and k are not clipped). The error objective is the group's Linear outputs,
where the reference implementation looks at the attention or MLP block output. All blocks see inputs from the
unquantized (scaled, equivalent) model; the grouped asymmetric quantization is applied to every Linear at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.calibration import CALIBRATION_SOURCE, calibration_batch, check_calibration
from flipscope.compress.capture import BlockInputs
from flipscope.compress.layers import decoder_layers
from flipscope.compress.rtn import RTNConfig, quantize_dequantize
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_ARGS = re.compile(r"^w(?P<bits>\d+)g(?P<group>\d+)$")
_HELP = "write awq:w<bits 2-8>g<group>, e.g. awq:w4g128"
_GRID = 20
_CLIP_STEPS = 10  # shrinks 1, 0.95, …, 0.55
_CLIP_TOKENS = 512


@register
@dataclass(frozen=True)
class AWQConfig(CompressionConfig):
    """Activation-aware weight quantization with calibration text: awq:w<bits>g<group> (zero point, per group)."""

    method: ClassVar[str] = "awq"
    syntax: ClassVar[str] = "awq:w<bits 2-8>g<group>"
    bits: int = 4
    group_size: int = 128
    samples: int = 32
    length: int = 256

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise FlipscopeError(f"awq bits must be 2–8, got {self.bits}", fix=_HELP)
        if self.group_size < 1:
            raise FlipscopeError(f"awq group size must be ≥ 1, got {self.group_size}", fix=_HELP)
        check_calibration(self.samples, self.length, "awq")

    @classmethod
    def parse(cls, args: str) -> AWQConfig:
        match = _ARGS.match(args.strip().lower())
        if not match:
            raise FlipscopeError(f"cannot read awq arguments {args!r}", fix=_HELP)
        return cls(bits=int(match.group("bits")), group_size=int(match.group("group")))

    def label(self) -> str:
        return f"awq:w{self.bits}g{self.group_size}"

    def grid(self) -> RTNConfig:
        return RTNConfig(bits=self.bits, group_size=self.group_size, symmetric=False)


def best_scales(x: torch.Tensor, weights: list[torch.Tensor], grid: RTNConfig) -> tuple[torch.Tensor, float]:
    """Search the AWQ scale exponent. x: [tokens, in]; weights: [out_i, in] → scales [in], chosen exponent."""
    import torch

    w = torch.cat([wi.float().to(x.device) for wi in weights])  # [out, in]
    x_mean = x.abs().mean(0)  # [in]
    g = grid.group_size or w.shape[1]
    w_rel = w.abs().view(w.shape[0], -1, g)
    w_mean = (w_rel / (w_rel.amax(dim=-1, keepdim=True) + 1e-6)).view_as(w).mean(0)  # [in]
    reference = x @ w.T  # [tokens, out]
    best: tuple[float, torch.Tensor, float] = (float("inf"), torch.ones_like(x_mean), 0.0)
    for step in range(_GRID):
        ratio = step / _GRID
        scales = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        scales = scales / (scales.max() * scales.min()).sqrt()
        quantized = quantize_dequantize(w * scales, grid) / scales
        loss = float((x @ quantized.T - reference).pow(2).mean())
        if loss < best[0]:
            best = (loss, scales, ratio)
    return best[1], best[2]


def best_clip(x: torch.Tensor, weight: torch.Tensor, grid: RTNConfig) -> torch.Tensor:
    """Per output channel and group, the |w| bound minimising the output error. x: [tokens, in]; weight: [out, in]
    → max_val [out, groups, 1]."""
    import torch

    g = grid.group_size or weight.shape[1]
    x = x[:: max(1, x.shape[0] // _CLIP_TOKENS)]
    xg = x.view(x.shape[0], -1, g)  # [n, groups, g]
    w = weight.float().to(x.device).view(weight.shape[0], -1, g)  # [out, groups, g]
    reference = torch.einsum("ngk,ogk->ong", xg, w)  # [out, n, groups]
    original = w.abs().amax(dim=-1, keepdim=True)  # [out, groups, 1]
    best_max = original.clone()
    best_err = torch.full(original.shape, float("inf"), device=w.device)
    for step in range(_CLIP_STEPS):
        max_val = original * (1 - step / _GRID)
        clipped = torch.clamp(w, -max_val, max_val)
        q = quantize_dequantize(clipped.view_as(weight), grid).view_as(w)
        err = (torch.einsum("ngk,ogk->ong", xg, q) - reference).pow(2).mean(dim=1, keepdim=True)  # [out, 1, groups]
        err = err.transpose(1, 2)  # [out, groups, 1]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better, max_val, best_max)
    return best_max


def _scaling_groups(block: Any) -> list[tuple[Any, list[str], str]]:
    """(preceding module, Linear names sharing one input, name whose input is that input) for a Llama-style block."""
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    if attn is None or mlp is None or not all(hasattr(attn, n) for n in names) or not hasattr(mlp, "down_proj"):
        raise FlipscopeError(
            f"awq does not know the layout of {type(block).__name__}",
            fix="awq supports Llama-style blocks (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj)",
        )
    groups = [(block.input_layernorm, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "self_attn.q_proj")]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        groups.append((attn.v_proj, ["self_attn.o_proj"], "self_attn.o_proj"))
    groups.append((block.post_attention_layernorm, ["mlp.gate_proj", "mlp.up_proj"], "mlp.gate_proj"))
    groups.append((mlp.up_proj, ["mlp.down_proj"], "mlp.down_proj"))
    return groups


def _fold(previous: Any, scales: torch.Tensor) -> None:
    """Divide the output of ``previous`` (a norm or a Linear) by ``scales``: weight rows (and bias)."""
    if previous.weight.dim() == 1:
        previous.weight.div_(scales.to(previous.weight))
    else:
        previous.weight.div_(scales.to(previous.weight).view(-1, 1))
    if getattr(previous, "bias", None) is not None:
        previous.bias.div_(scales.to(previous.bias))


@apply_compression.register(AWQConfig)
def _apply_awq(config: AWQConfig, model: torch.nn.Module, context: CompressionContext | None = None) -> dict[str, Any]:
    import torch

    context = context or CompressionContext()
    batch = calibration_batch(context.tokenizer, config.samples, config.length).to(context.device)
    grid = config.grid()
    blocks = decoder_layers(model)
    inputs = BlockInputs(model, batch, blocks)
    clips: dict[int, torch.Tensor] = {}
    ratios: list[float] = []
    for block in blocks:
        groups = _scaling_groups(block)
        modules = dict(block.named_modules())
        seen: dict[str, list[torch.Tensor]] = {key: [] for _, _, key in groups}

        def keep(name: str, x: torch.Tensor, seen: dict[str, list[torch.Tensor]] = seen) -> None:
            seen[name].append(x.cpu())

        inputs.feed(block, {key: modules[key] for key in seen}, keep)
        device = next(block.parameters()).device
        feats = {key: torch.cat(parts).to(device) for key, parts in seen.items()}  # [tokens, in]
        with torch.no_grad():
            for previous, names, key in groups:
                scales, ratio = best_scales(feats[key], [modules[n].weight for n in names], grid)
                ratios.append(ratio)
                _fold(previous, scales)
                for name in names:
                    modules[name].weight.mul_(scales.to(modules[name].weight).view(1, -1))
                feats[key] = feats[key] / scales
            for _, names, key in groups:
                for name in names:
                    if not name.endswith(("q_proj", "k_proj")):
                        clips[id(modules[name])] = best_clip(feats[key], modules[name].weight, grid)
        inputs.advance(block)
    touched = 0
    with torch.no_grad():
        for block in blocks:
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight
                    if id(module) in clips:
                        max_val = clips[id(module)].to(w.device)
                        grouped = w.float().view(w.shape[0], -1, grid.group_size or w.shape[1])
                        w.copy_(torch.clamp(grouped, -max_val, max_val).view_as(w).to(w.dtype))
                    w.copy_(quantize_dequantize(w, grid))
                    touched += 1
    return {
        "library": "flipscope",
        "calibration": f"{CALIBRATION_SOURCE}, {config.samples}×{config.length} tokens",
        "layers": touched,
        "mean_scale_exponent": sum(ratios) / len(ratios) if ratios else 0.0,
    }
