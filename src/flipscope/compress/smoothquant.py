"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights, then W8A8 quantize-dequantize.

Per-channel activation maxima max|X_j| come from one pass over calibration text. For each norm feeding Linear
layers (q/k/v after the input norm, gate/up after the post-attention norm), s_j = max|X_j|^α / max|W_j|^(1-α);
the norm's weight is divided by s and the Linears' input columns multiplied by it (the float model is unchanged).
Then every decoder Linear gets int8 weights per output channel and int8 inputs per token (dynamic, symmetric),
as in the reference fake-quant model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.calibration import CALIBRATION_SOURCE, calibration_batch, check_calibration
from flipscope.compress.capture import block_linears, feed_inputs
from flipscope.compress.layers import decoder_layers
from flipscope.compress.rtn import RTNConfig, quantize_dequantize
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_HELP = "write smoothquant:a<alpha in [0, 1]>, e.g. smoothquant:a0.5"


@register
@dataclass(frozen=True)
class SmoothQuantConfig(CompressionConfig):
    """SmoothQuant migration strength alpha, then W8A8 (weights per channel, activations per token):
    smoothquant:a0.5."""

    method: ClassVar[str] = "smoothquant"
    syntax: ClassVar[str] = "smoothquant:a<alpha in [0, 1]>"
    saveable: ClassVar[bool] = False
    alpha: float = 0.5
    samples: int = 16
    length: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise FlipscopeError(f"smoothquant alpha must be in [0, 1], got {self.alpha}", fix=_HELP)
        check_calibration(self.samples, self.length, "smoothquant")

    @classmethod
    def parse(cls, args: str) -> SmoothQuantConfig:
        text = args.strip().lower()
        try:
            return cls(alpha=float(text.removeprefix("a")) if text else 0.5)
        except ValueError as exc:
            raise FlipscopeError(f"cannot read smoothquant arguments {args!r}", fix=_HELP) from exc

    def label(self) -> str:
        return f"smoothquant:a{self.alpha:g}"


def smoothing_scales(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """act_max: [in]; weights: [out_i, in] sharing that input → s: [in]."""
    import torch

    w_max = torch.cat([w.detach().abs().float() for w in weights]).amax(dim=0).clamp(min=1e-5)  # [in]
    return (act_max.float().to(w_max.device).clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


def quantize_per_token(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric dynamic fake quantization, one scale per token. x: [..., in]."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    scale = (x.detach().abs().amax(dim=-1, keepdim=True).float() / qmax).clamp(min=1e-8)  # [..., 1]
    return (torch.clamp(torch.round(x.float() / scale), -qmax, qmax) * scale).to(x.dtype)


def _quantize_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (quantize_per_token(args[0]), *args[1:])


@apply_compression.register(SmoothQuantConfig)
def _apply_smoothquant(
    config: SmoothQuantConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    context = context or CompressionContext()
    batch = calibration_batch(context.tokenizer, config.samples, config.length).to(context.device)
    blocks = decoder_layers(model)
    linears = {f"{i}.{name}": m for i, block in enumerate(blocks) for name, m in block_linears(block).items()}
    act_max = {name: torch.zeros(m.in_features) for name, m in linears.items()}

    def track(name: str, x: torch.Tensor) -> None:
        act_max[name] = torch.maximum(act_max[name], x.abs().amax(dim=0).cpu())  # x: [tokens, in]

    feed_inputs(model, batch, linears, track)
    smoothed = 0
    with torch.no_grad():
        for i, block in enumerate(blocks):
            for norm_name, names in (
                ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
            ):
                norm = getattr(block, norm_name, None)
                layers = [linears.get(f"{i}.{n}") for n in names]
                if norm is None or any(layer is None for layer in layers):
                    continue
                chosen = [layer for layer in layers if layer is not None]
                scales = smoothing_scales(act_max[f"{i}.{names[0]}"], [m.weight for m in chosen], config.alpha)
                norm.weight.div_(scales.to(norm.weight))
                for layer in chosen:
                    layer.weight.mul_(scales.to(layer.weight).view(1, -1))
                smoothed += 1
        weights = RTNConfig(bits=8)
        for module in linears.values():
            module.weight.copy_(quantize_dequantize(module.weight, weights))
            module.register_forward_pre_hook(_quantize_input)
    return {
        "library": "flipscope",
        "calibration": f"{CALIBRATION_SOURCE}, {config.samples}×{config.length} tokens",
        "smoothed_groups": smoothed,
        "quantized_layers": len(linears),
        "scheme": "W8 per channel, A8 per token, symmetric",
    }
