"""bitsandbytes: LLM.int8 (W8A8 with fp16 outliers) and 4-bit NF4 / FP4, applied by transformers at load time."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register, require
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

BNB_PIP = "bitsandbytes==0.50.2"
KINDS = ("int8", "nf4", "fp4")


@register
@dataclass(frozen=True)
class BnBConfig(CompressionConfig):
    """bitsandbytes quantization at load: bnb:int8 (LLM.int8, outlier threshold 6), bnb:nf4, bnb:fp4."""

    method: ClassVar[str] = "bnb"
    syntax: ClassVar[str] = "bnb:{int8,nf4,fp4}[,threshold=<t>]"
    at_load: ClassVar[bool] = True
    kind: str = "nf4"
    threshold: float = 6.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not self.threshold >= 0:
            raise FlipscopeError(f"invalid bitsandbytes setting {self.kind!r}", fix=f"write {self.syntax}")

    @classmethod
    def parse(cls, args: str) -> BnBConfig:
        kind, *rest = [part.strip().lower() for part in args.split(",")]
        try:
            threshold = float(rest[0].removeprefix("threshold=")) if rest else 6.0
        except ValueError as exc:
            raise FlipscopeError(f"cannot read bnb arguments {args!r}", fix=f"write {cls.syntax}") from exc
        return cls(kind=kind, threshold=threshold)

    def label(self) -> str:
        return f"bnb:{self.kind}" + (f",threshold={self.threshold:g}" if self.threshold != 6.0 else "")

    def load_kwargs(self, device: str) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        require("bitsandbytes", method=self.label(), pip=BNB_PIP)
        if self.kind == "int8":
            quant = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.threshold)
        else:
            quant = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=self.kind, bnb_4bit_compute_dtype=torch.float32
            )
        return {"quantization_config": quant, "device_map": device}

    def stats(self) -> dict[str, Any]:
        return {"library": f"bitsandbytes {metadata.version('bitsandbytes')}", "kind": self.kind}


@apply_compression.register(BnBConfig)
def _apply_bnb(config: BnBConfig, model: torch.nn.Module, context: CompressionContext | None = None) -> dict[str, Any]:
    raise FlipscopeError(
        f"{config.label()} quantizes while loading", fix="put it first after the model: hf:DIR+bnb:nf4"
    )
