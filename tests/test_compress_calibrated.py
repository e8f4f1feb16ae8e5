"""Calibrated methods (GPTQ, AWQ, SmoothQuant) and KV-cache quantization: algorithm identities and error order."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipscope.compress import (
    AWQConfig,
    GPTQConfig,
    KVCacheConfig,
    RTNConfig,
    SmoothQuantConfig,
    apply_compression,
    config_from_dict,
    gptq_quantize,
    parse_method,
    quantize_dequantize,
)
from flipscope.compress.base import CompressionContext
from flipscope.errors import FlipscopeError


def tiny(path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def mean_kl(base, other, ids) -> float:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        lb = torch.log_softmax(base(torch.tensor([ids])).logits[0], -1)  # [T, V]
        lc = torch.log_softmax(other(torch.tensor([ids])).logits[0], -1)
    return float((lb.exp() * (lb - lc)).sum(-1).mean())


def correlated_inputs(n: int, width: int, seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=g) @ (torch.eye(width) + torch.randn(width, width, generator=g) / width**0.5)
    x[:, :3] *= 15  # outlier channels, as in LLM activations
    return x


@pytest.mark.parametrize(
    "config",
    [
        GPTQConfig(bits=3, group_size=32, act_order=True, symmetric=False, damp=0.05),
        GPTQConfig(bits=8, group_size=None),
        AWQConfig(bits=3, group_size=32),
        SmoothQuantConfig(alpha=0.75),
        KVCacheConfig(bits=4),
    ],
)
def test_configs_round_trip(config) -> None:  # type: ignore[no-untyped-def]
    assert config_from_dict(config.to_dict()) == config
    assert parse_method(config.label()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gptq:w1g64", "bits must be 2–8"),
        ("gptq:w4g64,damp=2", "damp must be in"),
        ("gptq:w4g64,fast", "unknown gptq flag"),
        ("awq:w4", "cannot read awq"),
        ("smoothquant:a1.5", "alpha must be in"),
        ("kv:fp8", "cannot read kv"),
        ("kv:int1", "kv bits must be 2–8"),
    ],
)
def test_invalid_parameters_fail_at_parse_time(text: str, message: str) -> None:
    with pytest.raises(FlipscopeError, match=message):
        parse_method(text)


def test_gptq_with_an_identity_hessian_is_plain_rounding() -> None:
    import torch

    from flipscope.compress.gptq import grid, snap

    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    config = GPTQConfig(bits=4, group_size=16)
    got = gptq_quantize(w, torch.eye(64), config)
    groups = [snap(w[:, i : i + 16], *grid(w[:, i : i + 16], 4, symmetric=True), 4) for i in range(0, 64, 16)]
    assert torch.allclose(got, torch.cat(groups, dim=1), atol=1e-6)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_output_error_beats_rounding_and_falls_with_bits(act_order: bool) -> None:
    import torch

    from flipscope.compress.gptq import grid, snap

    x = correlated_inputs(1024, 64)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    hessian = 2 / x.shape[0] * x.T @ x

    def out_err(q: torch.Tensor) -> float:
        return float((x @ (w - q).T).pow(2).mean())

    errors = []
    for bits in (3, 4, 8):
        q = gptq_quantize(w, hessian, GPTQConfig(bits=bits, group_size=None, act_order=act_order))
        rounded = snap(w, *grid(w, bits, symmetric=True), bits)
        assert out_err(q) < out_err(rounded)
        errors.append(out_err(q))
    assert errors[0] > errors[1] > errors[2]


def test_gptq_zeroes_dead_input_columns() -> None:
    import torch

    x = correlated_inputs(256, 32)
    x[:, 5] = 0
    q = gptq_quantize(torch.randn(8, 32), 2 / 256 * x.T @ x, GPTQConfig(bits=4, group_size=8))
    assert bool((q[:, 5] == 0).all())


def test_awq_scale_search_never_loses_to_plain_rounding() -> None:
    import torch

    from flipscope.compress.awq import best_clip, best_scales

    x = correlated_inputs(512, 64, seed=3)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(4))
    grid = RTNConfig(bits=3, group_size=16, symmetric=False)
    scales, ratio = best_scales(x, [w], grid)
    scaled = quantize_dequantize(w * scales, grid) / scales
    plain = quantize_dequantize(w, grid)
    assert float((x @ (w - scaled).T).pow(2).mean()) <= float((x @ (w - plain).T).pow(2).mean())
    assert 0 <= ratio < 1 and scales.shape == (64,)
    bound = best_clip(x, w, grid)  # [out, groups, 1]
    original = w.abs().view(48, 4, 16).amax(-1, keepdim=True)
    assert bool((bound <= original + 1e-6).all()) and bool((bound >= 0.55 * original - 1e-6).all())


def test_calibrated_methods_on_the_tiny_llama_err_less_with_more_bits(tiny_llama: Path) -> None:
    ids = [1, 5, 9, 30, 2, 7, 100, 45, 3, 12]
    base, tokenizer = tiny(tiny_llama)
    context = CompressionContext(tokenizer, "cpu")
    for low, high in (
        (
            GPTQConfig(bits=3, group_size=32, samples=4, length=32),
            GPTQConfig(bits=8, group_size=32, samples=4, length=32),
        ),
        (
            AWQConfig(bits=3, group_size=32, samples=4, length=32),
            AWQConfig(bits=8, group_size=32, samples=4, length=32),
        ),
    ):
        kls = []
        for config in (low, high):
            model, _ = tiny(tiny_llama)
            stats = apply_compression(config, model, context)
            assert stats["layers"] == 14 and "calibration" in stats
            kls.append(mean_kl(base, model, ids))
        assert kls[0] > kls[1] > 0


def test_smoothquant_migration_keeps_the_float_model_and_quantizes_activations(tiny_llama: Path) -> None:
    import torch

    from flipscope.compress.smoothquant import quantize_per_token, smoothing_scales

    x = torch.tensor([[1.0, -0.5, 100.0], [0.2, 0.1, -3.0]])
    q = quantize_per_token(x)
    assert bool(((q - x).abs() <= x.abs().amax(-1, keepdim=True) / 127 / 2 + 1e-6).all())
    s = smoothing_scales(torch.tensor([4.0, 1.0, 100.0]), [torch.tensor([[1.0, 1.0, 1.0]])], alpha=0.5)
    assert torch.allclose(s, torch.tensor([2.0, 1.0, 10.0]))
    ids = [1, 5, 9, 30, 2, 7, 100, 45]
    base, tokenizer = tiny(tiny_llama)
    model, _ = tiny(tiny_llama)
    stats = apply_compression(SmoothQuantConfig(alpha=0.5, samples=4, length=32), model, CompressionContext(tokenizer))
    assert stats["smoothed_groups"] == 4 and stats["quantized_layers"] == 14
    assert 0 < mean_kl(base, model, ids) < 0.05


def test_kv_quantizer_is_idempotent_and_within_half_a_step() -> None:
    import torch

    from flipscope.compress.kv import fake_quantize_rows

    x = torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(5))  # [B, H, T, D]
    q = fake_quantize_rows(x, 4)
    step = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)) / 15
    assert bool(((q - x).abs() <= step / 2 + 1e-6).all())
    assert torch.allclose(fake_quantize_rows(q, 4), q, atol=1e-6)


def test_kv_quantization_moves_the_model_less_with_more_bits(tiny_llama: Path) -> None:
    ids = [1, 5, 9, 30, 2, 7, 100, 45, 3, 12]
    base, _ = tiny(tiny_llama)
    kls = []
    for bits in (3, 8):
        model, _ = tiny(tiny_llama)
        stats = apply_compression(KVCacheConfig(bits=bits), model)
        assert stats["attention_layers"] == 2
        kls.append(mean_kl(base, model, ids))
    assert kls[0] > kls[1] > 0
    with pytest.raises(FlipscopeError, match="applied twice"):
        apply_compression(KVCacheConfig(bits=8), model)


def test_group_size_that_does_not_divide_a_width_is_refused_before_loading(tmp_path: Path) -> None:
    import json

    from flipscope.models import check_compression, parse_spec

    (tmp_path / "config.json").write_text(
        json.dumps({"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9})
    )
    for suffix in ("+awq:w4g128", "+gptq:w4g128", "+rtn:w4g100", "+hqq:w4g128", "+torchao:intx-w4g128"):
        with pytest.raises(FlipscopeError, match=r"does not divide the Linear input width 576.*e\.g\. 64"):
            check_compression(parse_spec(f"hf:{tmp_path}{suffix}"))
    check_compression(parse_spec(f"hf:{tmp_path}+gptq:w4g64+kv:int8"))
