"""optimum-quanto: int8 / int4 / int2 / float8 weights, optionally int8 activations (calibrated on offline text)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register, require
from flipscope.compress.calibration import CALIBRATION_SOURCE, calibration_batch
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

QUANTO_PIP = "optimum-quanto==0.2.7"
WEIGHTS = ("int8", "int4", "int2", "float8")
_SPEC = re.compile(r"^w(int8|int4|int2|float8)(?:a(int8))?$|^w8a8$")


@register
@dataclass(frozen=True)
class QuantoConfig(CompressionConfig):
    """optimum-quanto weights (quanto:wint4) or W8A8 with calibrated int8 activations (quanto:w8a8)."""

    method: ClassVar[str] = "quanto"
    syntax: ClassVar[str] = "quanto:w{int8,int4,int2,float8} | quanto:w8a8"
    saveable: ClassVar[bool] = False
    weights: str = "int8"
    activations: str | None = None
    samples: int = 8
    length: int = 128

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS or self.activations not in (None, "int8"):
            raise FlipscopeError(f"invalid quanto setting {self.label()!r}", fix=f"write {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> QuantoConfig:
        text = args.strip().lower()
        match = _SPEC.match(text)
        if not match:
            raise FlipscopeError(f"cannot read quanto arguments {args!r}", fix=f"write {cls.syntax}")
        if text == "w8a8":
            return cls(weights="int8", activations="int8")
        return cls(weights=match.group(1), activations=match.group(2))

    def label(self) -> str:
        if self.weights == "int8" and self.activations == "int8":
            return "quanto:w8a8"
        return f"quanto:w{self.weights}" + (f"a{self.activations}" if self.activations else "")


@apply_compression.register(QuantoConfig)
def _apply_quanto(
    config: QuantoConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    quanto = require("optimum.quanto", method=config.label(), pip=QUANTO_PIP)
    chosen = {name for name, _ in linear_layers(model)}
    skip = [
        name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name not in chosen
    ]
    weights = getattr(quanto, f"q{config.weights}")
    activations = getattr(quanto, f"q{config.activations}") if config.activations else None
    quanto.quantize(model, weights=weights, activations=activations, exclude=skip or None)
    stats: dict[str, Any] = {"library": f"optimum-quanto {metadata.version('optimum-quanto')}", "layers": len(chosen)}
    if activations is not None:
        context = context or CompressionContext()
        batch = calibration_batch(context.tokenizer, config.samples, config.length).to(context.device)
        with torch.no_grad(), quanto.Calibration():
            model(input_ids=batch)  # records the activation ranges the int8 scales come from
        stats["calibration"] = f"{CALIBRATION_SOURCE}, {config.samples}×{config.length} tokens"
    quanto.freeze(model)
    return stats
