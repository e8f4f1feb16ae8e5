"""Compression applied on the fly to a copy of the baseline's weights: one typed config per method."""

from flipscope.compress.awq import AWQConfig
from flipscope.compress.base import (
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
from flipscope.compress.gptq import GPTQConfig, gptq_quantize
from flipscope.compress.hqq import HQQConfig
from flipscope.compress.kv import KVCacheConfig
from flipscope.compress.noise import NoiseConfig
from flipscope.compress.plan import PlanConfig
from flipscope.compress.quanto import QuantoConfig
from flipscope.compress.rtn import RTNConfig, quantize_dequantize
from flipscope.compress.smoothquant import SmoothQuantConfig
from flipscope.compress.sparsity import MagnitudeConfig, NMConfig, magnitude_mask, nm_mask
from flipscope.compress.torchao import TorchAOConfig
from flipscope.compress.wanda import WandaConfig, wanda_mask

__all__ = [
    "METHODS",
    "AWQConfig",
    "BnBConfig",
    "CompressionConfig",
    "CompressionContext",
    "DropLayersConfig",
    "GGMLConfig",
    "GPTQConfig",
    "HQQConfig",
    "KVCacheConfig",
    "MagnitudeConfig",
    "NMConfig",
    "NoiseConfig",
    "PlanConfig",
    "QuantoConfig",
    "RTNConfig",
    "SmoothQuantConfig",
    "TorchAOConfig",
    "WandaConfig",
    "apply_compression",
    "config_from_dict",
    "gptq_quantize",
    "magnitude_mask",
    "nm_mask",
    "parse_method",
    "quantize_dequantize",
    "wanda_mask",
]
