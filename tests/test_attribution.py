"""Attribution and advice: units, the knapsack against brute force, plan files, ablation bookkeeping."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from flipscope.attribution.knapsack import Option, frontier, least_cost, least_value
from flipscope.attribution.units import UnitKind, make_units
from flipscope.errors import FlipscopeError


def _instance(seed: int, n: int, k: int) -> list[list[Option]]:
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(n):
        costs = np.sort(rng.uniform(1, 10, k))
        values = np.sort(rng.exponential(1.0, k))[::-1]  # more bits, less KL (mostly)
        values = values * rng.uniform(0.5, 1.5, k)  # not always monotone: the solver must not assume it
        units.append([Option(float(c), float(v)) for c, v in zip(costs, values, strict=True)])
    return units


@pytest.mark.parametrize("seed", range(8))
def test_knapsack_matches_brute_force(seed: int) -> None:
    units = _instance(seed, n=5, k=4)
    everything = [
        (sum(u[j].cost for u, j in zip(units, picks, strict=True)), sum(u[j].value for u, j in zip(units, picks,
                                                                                                   strict=True)), picks)
        for picks in itertools.product(range(4), repeat=5)
    ]  # fmt: skip
    for budget in (10.0, 20.0, 28.0, 35.0, 60.0):
        fits = [e for e in everything if e[0] <= budget]
        got = least_value(units, budget)
        if not fits:
            assert got is None
            continue
        best = min(e[1] for e in fits)
        assert got is not None and got.value == pytest.approx(best) and got.cost <= budget
        assert sum(u[j].value for u, j in zip(units, got.picks, strict=True)) == pytest.approx(got.value)
    for kl_budget in (1.0, 3.0, 6.0):
        fits = [e for e in everything if e[1] <= kl_budget]
        got = least_cost(units, kl_budget)
        assert (got is None) == (not fits)
        if got is not None:
            assert got.cost == pytest.approx(min(e[0] for e in fits))
    pareto = frontier(units)
    assert all(a.cost < b.cost and a.value > b.value for a, b in itertools.pairwise(pareto))


def test_knapsack_with_a_resolution_stays_close_on_many_units() -> None:
    units = _instance(0, n=120, k=5)
    budget = sum(u[2].cost for u in units)
    exact = least_value(units, budget)
    rough = least_value(units, budget, resolution=budget / 5000)
    assert exact is not None and rough is not None and rough.cost <= budget
    assert rough.value <= exact.value * 1.02  # within 2% of the exact optimum


def test_units_by_block_module_and_linear() -> None:
    names = [(f"model.layers.{b}.{part}", 10 * (b + 1)) for b in range(3)
             for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]  # fmt: skip
    blocks = make_units(names, UnitKind.BLOCK)
    assert [u.name for u in blocks] == ["block 0", "block 1", "block 2"] and blocks[1].params == 60
    kinds = make_units(names, "module")
    assert [u.name for u in kinds] == ["q_proj", "v_proj", "down_proj"] and kinds[0].params == 60
    assert len(make_units(names, "linear")) == 9 and math.isclose(sum(u.params for u in kinds), 180)


def test_plan_files_round_trip_and_refuse_unknown_layers(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from flipscope.compress import RTNConfig, apply_compression, parse_method, quantize_dequantize
    from flipscope.compress.plan import PlanConfig, write_plan

    path = write_plan(tmp_path / "p.json", RTNConfig(bits=4, group_size=16),
                      {"model.layers.1.mlp.down_proj": RTNConfig(bits=8, group_size=16)}, note="test")  # fmt: skip
    config = parse_method(f"plan:{path}")
    assert isinstance(config, PlanConfig) and parse_method(f"rtn:plan={path}") == config
    from flipscope.compress import config_from_dict

    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config  # stored configs read back
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    original = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    stats = apply_compression(config, model)
    modules = dict(model.named_modules())
    down = "model.layers.1.mlp.down_proj"
    expect = quantize_dequantize(original[down], RTNConfig(bits=8, group_size=16))
    assert torch.equal(modules[down].weight, expect)
    q = "model.layers.0.self_attn.q_proj"
    assert torch.equal(modules[q].weight, quantize_dequantize(original[q], RTNConfig(bits=4, group_size=16)))
    assert torch.equal(modules["lm_head"].weight, original["lm_head"])  # the head is left alone
    assert 4 < stats["avg_bits_per_weight"] < 8
    bad = write_plan(tmp_path / "bad.json", RTNConfig(bits=4, group_size=16),
                     {"model.layers.9.mlp.down_proj": RTNConfig(bits=8, group_size=16)})  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"names 1 layer.* this model does not have"):
        apply_compression(parse_method(f"plan:{bad}"), AutoModelForCausalLM.from_pretrained(tiny_llama))
    (tmp_path / "junk.json").write_text('{"format": "other"}')
    with pytest.raises(FlipscopeError, match="is not a flipscope plan"):
        parse_method(f"plan:{tmp_path / 'junk.json'}")
