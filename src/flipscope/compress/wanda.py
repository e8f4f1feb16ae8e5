"""Wanda pruning (Sun et al., 2023): drop the weights with the smallest |W_ij| · ‖X_j‖₂, per output row.

Blocks are pruned in order; each block's input-activation norms are measured on calibration text after the
blocks before it were pruned, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.calibration import CALIBRATION_SOURCE, calibration_batch, check_calibration
from flipscope.compress.capture import BlockInputs, block_linears
from flipscope.compress.layers import decoder_layers
from flipscope.compress.sparsity import check_sparsity, parse_sparsity

if TYPE_CHECKING:
    import torch


@register
@dataclass(frozen=True)
class WandaConfig(CompressionConfig):
    """Wanda unstructured pruning with activation norms from calibration text: wanda:0.5 (exact share per row)."""

    method: ClassVar[str] = "wanda"
    syntax: ClassVar[str] = "wanda:<sparsity in [0, 1)>"
    sparsity: float = 0.5
    samples: int = 16
    length: int = 128

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, self.syntax)
        check_calibration(self.samples, self.length, "wanda")

    @classmethod
    def parse(cls, args: str) -> WandaConfig:
        return cls(sparsity=parse_sparsity(args, cls.syntax))

    def label(self) -> str:
        return f"wanda:{self.sparsity:g}"


def wanda_mask(weight: torch.Tensor, input_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """weight: [out, in]; input_norm: [in] = ‖X_j‖₂ → keep-mask dropping round(sparsity · in) per row."""
    import torch

    score = weight.detach().abs().float() * input_norm.float().to(weight.device)[None, :]  # [out, in]
    drop = round(sparsity * weight.shape[1])
    keep = torch.ones_like(score, dtype=torch.bool)
    if drop:
        keep.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, :drop], False)
    return keep


@apply_compression.register(WandaConfig)
def _apply_wanda(
    config: WandaConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    context = context or CompressionContext()
    batch = calibration_batch(context.tokenizer, config.samples, config.length).to(context.device)
    kept, total = 0, 0
    blocks = decoder_layers(model)
    inputs = BlockInputs(model, batch, blocks)
    for block in blocks:
        linears = block_linears(block)
        sq_norms = {name: torch.zeros(m.in_features) for name, m in linears.items()}

        def add(name: str, x: torch.Tensor, sq_norms: dict[str, Any] = sq_norms) -> None:
            sq_norms[name] += x.pow(2).sum(0).cpu()  # x: [tokens, in]

        inputs.feed(block, linears, add)
        with torch.no_grad():
            for name, module in linears.items():
                mask = wanda_mask(module.weight, sq_norms[name].sqrt(), config.sparsity)
                module.weight.mul_(mask.to(module.weight.dtype).to(module.weight.device))
                kept += int(mask.sum())
                total += mask.numel()
        inputs.advance(block)
    return {
        "library": "flipscope",
        "calibration": f"{CALIBRATION_SOURCE}, {config.samples}×{config.length} tokens",
        "sparsity": 1 - kept / total if total else 0.0,
    }
