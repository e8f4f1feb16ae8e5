"""Model spec parsing and RTN quantize-dequantize error bounds."""

from __future__ import annotations

import itertools

import pytest

from flipscope.compress import RTNConfig, parse_method, quantize_dequantize
from flipscope.errors import FlipscopeError
from flipscope.models import ModelSpec, parse_spec


def test_parse_bundled_with_compression() -> None:
    spec = parse_spec("bundled:smollm2-135m+rtn:w4g64")
    assert spec.source == "bundled" and spec.location == "smollm2-135m"
    assert spec.compression == (RTNConfig(bits=4, group_size=64),)
    assert spec.label() == "bundled:smollm2-135m+rtn:w4g64"
    assert parse_spec(spec.label()) == spec


def test_candidate_shorthand_applies_to_baseline() -> None:
    base = parse_spec("hf:org/model")
    cand = parse_spec("+rtn:w3g64,asym", baseline=base)
    assert cand.base() == base
    assert cand.compression == (RTNConfig(bits=3, group_size=64, symmetric=False),)
    assert cand.label() == "hf:org/model+rtn:w3g64,asym"


def test_parse_rtn_variants() -> None:
    assert parse_method("rtn:w8") == RTNConfig(bits=8)
    assert parse_method("rtn:w2g32,lm_head") == RTNConfig(bits=2, group_size=32, include_lm_head=True)


def test_bare_directory_is_hf(tmp_path) -> None:
    assert parse_spec(str(tmp_path)) == ModelSpec("hf", str(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nosuch:model", "unknown model spec"),
        ("bundled:smollm2-135m+slicegpt:0.2", "unknown compression method 'slicegpt'"),
        ("bundled:smollm2-135m+rtn:w9", "bits must be 2–8"),
        ("bundled:smollm2-135m+rtn:x4", "cannot read rtn arguments"),
        ("bundled:smollm2-135m+rtn:w4,fast", "unknown rtn flag"),
        ("+rtn:w4", "no baseline"),
        ("hf:", "names no model"),
        ("", "empty model spec"),
    ],
)
def test_bad_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(FlipscopeError, match=message) as info:
        parse_spec(text)
    assert info.value.fix  # every error says what to do


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("bits", "group"), [(2, None), (3, 64), (4, 128), (4, 7), (8, None), (5, 16)])
def test_rtn_within_half_a_step(bits: int, group: int | None, symmetric: bool) -> None:
    import torch

    torch.manual_seed(bits)
    w = torch.randn(24, 200) * torch.linspace(0.01, 3.0, 24)[:, None]  # [out, in]; in not a multiple of 7/16/64/128
    config = RTNConfig(bits=bits, group_size=group, symmetric=symmetric)
    deq = quantize_dequantize(w, config)
    g = group or w.shape[1]
    for start in range(0, w.shape[1], g):
        block = w[:, start : start + g]
        err = (deq[:, start : start + g] - block).abs()
        if symmetric:
            step = block.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
        else:
            step = (block.amax(dim=1, keepdim=True) - block.amin(dim=1, keepdim=True)) / (2**bits - 1)
        assert bool((err <= step / 2 + 1e-6).all())
        levels = torch.unique(torch.round(deq[0, start : start + g] / step[0] * 1e3))
        assert len(levels) <= 2**bits


def test_rtn_error_falls_as_bits_rise() -> None:
    import torch

    torch.manual_seed(0)
    w = torch.randn(64, 256)
    errors = [float((quantize_dequantize(w, RTNConfig(bits=b, group_size=64)) - w).pow(2).mean()) for b in range(2, 9)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))


def test_rtn_on_model_skips_lm_head_and_keeps_tied_embeddings(tiny_llama) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from flipscope.compress import apply_compression

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    head = model.lm_head.weight.detach().clone()
    q_proj = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    stats = apply_compression(RTNConfig(bits=3, group_size=16), model)
    assert stats["layers"] == 2 * 7
    assert torch.equal(model.lm_head.weight, head)
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_proj)
    embed = model.get_input_embeddings().weight.detach().clone()
    model.lm_head.weight = model.get_input_embeddings().weight  # tie them
    apply_compression(RTNConfig(bits=3, group_size=16, include_lm_head=True), model)
    assert torch.equal(model.get_input_embeddings().weight, embed)
    assert not torch.equal(model.lm_head.weight, embed)
