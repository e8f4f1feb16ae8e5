"""What a compressed candidate is known to store per weight, from its compression configs alone (no weights read):
the nominal bits per weight of the quantized Linear layers, scales included. None where a config does not say
(sparsity, dropped layers, mixed K-quants, library-specific packings)."""

from __future__ import annotations

from collections.abc import Sequence

from flipscope.compress.base import CompressionConfig

#: llama.cpp block formats: 32 weights per block plus an fp16 scale (and an fp16 minimum for the _1 types).
GGML_BITS = {"Q8_0": 8.5, "Q5_0": 5.5, "Q5_1": 6.0, "Q4_0": 4.5, "Q4_1": 5.0, "Q6_K": 6.5625, "F16": 16.0,
             "BF16": 16.0}  # fmt: skip
#: Methods that leave the stored weights as they are (noise on weights, a quantized KV cache).
SIZE_NEUTRAL = ("noise", "kv")
#: Methods whose config has ``bits`` and ``group_size``: codes plus one fp16 scale per group, and a zero point per
#: group where the grid is asymmetric: a ``bits``-wide code (rtn/gptq ``,asym``, awq) or an fp16 value (hqq).
GROUPED = ("rtn", "gptq", "awq", "hqq")
ZERO_FP16 = ("hqq",)  # an fp16 zero per group
ZERO_CODE = ("awq",)  # a bits-wide zero per group, always (rtn and gptq: with ``,asym``)
DTYPE_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0}


def nominal_bits(compression: Sequence[CompressionConfig], dtype: str = "float32") -> float | None:
    """Bits per Linear weight that ``compression`` stores, nominally: ``bits + (16 + zero) / group_size`` for
    grouped quantizers (``zero``: the zero point's width, 0 on a symmetric grid; ``bits`` alone where the scale is
    per row: a 16-bit scale over a row of thousands of weights adds < 0.01), the block formats' own sizes,
    ``dtype``'s width where no config changes the weights; None when unknown."""
    sized = [c for c in compression if c.method not in SIZE_NEUTRAL]
    if not sized:
        return DTYPE_BITS.get(dtype)
    if len(sized) > 1:
        return None
    config = sized[0]
    if config.method in GROUPED:
        bits, group = getattr(config, "bits", None), getattr(config, "group_size", None)
        if not isinstance(bits, int):
            return None
        if not (isinstance(group, int) and group > 0):
            return float(bits)
        asym = config.method in ZERO_CODE or getattr(config, "symmetric", True) is False
        zero = 16 if config.method in ZERO_FP16 else bits if asym else 0
        return bits + (16 + zero) / group
    if config.method == "ggml":
        return GGML_BITS.get(str(getattr(config, "qtype", "")))
    return None
