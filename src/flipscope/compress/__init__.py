"""Compression applied on the fly to a copy of the baseline's weights."""

from flipscope.compress._base import METHODS, CompressionConfig, apply_compression, parse_method
from flipscope.compress.rtn import RTNConfig, quantize_dequantize

__all__ = [
    "METHODS",
    "CompressionConfig",
    "RTNConfig",
    "apply_compression",
    "parse_method",
    "quantize_dequantize",
]
