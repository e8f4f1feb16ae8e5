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
    and IQ4 (ggml:Q4_K_M, …), per-tensor plans (ggml:plan=PLAN.json, from ``flipscope advise gguf:…``) and an
    importance matrix (``,imatrix=FILE``) on gguf: models, made by llama.cpp; ``,requant`` allows quantizing a
    quantized file."""

    method: ClassVar[str] = "ggml"
    syntax: ClassVar[str] = ("ggml:{" + ",".join(GGML_TYPES) + "} (gguf: models also Q6_K, Q4_K_M, Q2_K, …, "
                             "plan=PLAN.json)[,imatrix=FILE][,requant]")  # fmt: skip
    qtype: str = "Q8_0"  # the file type ("" with a plan: then ``base``)
    requantize: bool = False
    plan: str = ""  # a plan file as typed (the label); ``tensors`` is its content (the cache key)
    tensors: tuple[tuple[str, str], ...] = ()  # (GGUF tensor name, llama.cpp type)
    base: str = ""  # with a plan: the file type for tensors it does not name
    imatrix: str = ""  # an importance matrix file as typed; ``imatrix_sha256`` its content
    imatrix_sha256: str = ""

    def __post_init__(self) -> None:
        if not self.plan and self.qtype not in GGML_TYPES + LLAMA_CPP_TYPES:
            raise FlipscopeError(
                f"unknown ggml type {self.qtype!r}", fix=f"use one of {', '.join(GGML_TYPES + LLAMA_CPP_TYPES)}"
            )

    @classmethod
    def parse(cls, args: str) -> GGMLConfig:
        from flipscope.plumbing.cache import file_sha256, user_path

        head, *flags = [part.strip() for part in args.split(",")]
        requantize, imatrix = False, ""
        for flag in flags:
            if flag == "requant":
                requantize = True
            elif flag.startswith("imatrix="):
                imatrix = flag.removeprefix("imatrix=")
                if not imatrix.strip():
                    raise FlipscopeError(
                        f"ggml:{args}: imatrix= names no file", fix="give ,imatrix=FILE or leave it out"
                    )
            else:
                raise FlipscopeError(f"unknown ggml flag {flag!r}", fix="the flags are ,imatrix=FILE and ,requant")
        plan, base = "", ""
        tensors: tuple[tuple[str, str], ...] = ()
        if head.startswith("plan="):
            plan = head.removeprefix("plan=")
            tensors, base, imatrix = _plan_content(plan, imatrix)
        sha = ""
        if imatrix:
            path = user_path(imatrix)
            if not path.is_file():
                raise FlipscopeError(
                    f"imatrix file {imatrix} does not exist", fix="give a llama.cpp imatrix file (llama-imatrix)"
                )
            sha = file_sha256(path)
        return cls(qtype="" if plan else head.upper(), requantize=requantize, plan=plan, tensors=tensors, base=base,
                   imatrix=imatrix, imatrix_sha256=sha)  # fmt: skip

    def label(self) -> str:
        what = f"plan={self.plan}" if self.plan else self.qtype
        return (
            f"ggml:{what}"
            + (f",imatrix={self.imatrix}" if self.imatrix else "")
            + (",requant" if self.requantize else "")
        )

    @property
    def ftype(self) -> str:
        """The llama_ftype the file is made with (a plan's ``base``)."""
        return self.base or self.qtype

    @property
    def group_size(self) -> int:
        """Every llama.cpp block format here packs 32 weights of a row per block."""
        return 32


def _plan_content(plan: str, imatrix: str) -> tuple[tuple[tuple[str, str], ...], str, str]:
    """A ggml plan file's (tensor, type) pairs, its base file type, and the imatrix: the one given, else the one the
    plan was fitted with (which must still be there)."""
    from collections import Counter
    from pathlib import Path

    from flipscope.compress.ggml_plan import read_ggml_plan
    from flipscope.compress.gguf_types import FTYPE
    from flipscope.plumbing.cache import file_sha256, user_path

    if not plan:
        raise FlipscopeError("ggml:plan= needs a file, e.g. +ggml:plan=advised.json",
                             fix="flipscope advise gguf:BASE.gguf … --out FILE")  # fmt: skip
    tensors, doc = read_ggml_plan(user_path(plan))
    base = str(doc.get("base") or FTYPE.get(Counter(tensors.values()).most_common(1)[0][0], "Q8_0"))
    if base not in LLAMA_CPP_TYPES + GGML_TYPES or base in ("F16", "BF16"):
        quantized = ", ".join(t for t in LLAMA_CPP_TYPES + GGML_TYPES if "F" not in t)
        raise FlipscopeError(f'{plan}: "base" {base!r} is not a quantized llama.cpp file type',
                             fix=f"use one of {quantized}")  # fmt: skip
    fitted = doc.get("imatrix")
    if not imatrix and isinstance(fitted, dict) and fitted.get("file"):
        found = Path(str(fitted["file"]))
        if not found.is_file() or file_sha256(found) != fitted.get("sha256"):
            raise FlipscopeError(f"{plan} was fitted with the importance matrix {found}, which is gone or changed",
                                 fix="give it: +ggml:plan=PLAN,imatrix=FILE")  # fmt: skip
        imatrix = str(found)
    return tuple(sorted(tensors.items())), base, imatrix


@apply_compression.register(GGMLConfig)
def _apply_ggml(
    config: GGMLConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch
    from gguf import GGMLQuantizationType, quants

    if config.plan or config.imatrix or config.qtype not in GGML_TYPES:
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
