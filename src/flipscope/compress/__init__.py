"""Compression applied on the fly to a copy of the baseline's weights: one typed config per method."""

from flipscope.compress._base import (
    METHODS,
    CompressionConfig,
    CompressionContext,
    apply_compression,
    config_from_dict,
    parse_method,
)
from flipscope.compress.bnb import BnBConfig
from flipscope.compress.drop import DropLayersConfig
from flipscope.compress.ggml import GGMLConfig
from flipscope.compress.hqq import HQQConfig
from flipscope.compress.noise import NoiseConfig
from flipscope.compress.quanto import QuantoConfig
from flipscope.compress.rtn import RTNConfig, quantize_dequantize
from flipscope.compress.sparsity import MagnitudeConfig, NMConfig, magnitude_mask, nm_mask
from flipscope.compress.torchao import TorchAOConfig
from flipscope.compress.wanda import WandaConfig, wanda_mask

__all__ = [
    "METHODS",
    "BnBConfig",
    "CompressionConfig",
    "CompressionContext",
    "DropLayersConfig",
    "GGMLConfig",
    "HQQConfig",
    "MagnitudeConfig",
    "NMConfig",
    "NoiseConfig",
    "QuantoConfig",
    "RTNConfig",
    "TorchAOConfig",
    "WandaConfig",
    "apply_compression",
    "config_from_dict",
    "magnitude_mask",
    "nm_mask",
    "parse_method",
    "quantize_dequantize",
    "wanda_mask",
]
