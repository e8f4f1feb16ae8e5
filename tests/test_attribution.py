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


def test_units_by_block_module_and_linear() -> None:
    names = [(f"model.layers.{b}.{part}", 10 * (b + 1)) for b in range(3)
             for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]  # fmt: skip
    blocks = make_units(names, UnitKind.BLOCK)
    assert [u.name for u in blocks] == ["block 0", "block 1", "block 2"] and blocks[1].params == 60
    kinds = make_units(names, "module")
    assert [u.name for u in kinds] == ["q_proj", "v_proj", "down_proj"] and kinds[0].params == 60
    assert len(make_units(names, "linear")) == 9 and math.isclose(sum(u.params for u in kinds), 180)
    spans = make_units(names, "module", span=2)  # blocks 0-1 and 2 (the blocks run out)
    assert [u.name for u in spans[:2]] == ["q_proj blocks 0-1", "v_proj blocks 0-1"] and len(spans) == 6
    assert spans[2].linears == ("model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj")
    assert spans[3].name == "q_proj block 2" and spans[3].params == 30
    assert [u.linears for u in make_units(names, "module", span=1)] == [u.linears for u in make_units(names, "linear")]
    with pytest.raises(FlipscopeError, match="span"):
        make_units(names, "block", span=2)


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


def _corpus(tmp_path: Path) -> str:
    path = tmp_path / "text.txt"
    path.write_text("The planets circle the sun. Paris is the capital of France. Water boils at one hundred. " * 60)
    return str(path)


def test_ablation_bookkeeping_restores_the_baseline_and_rebuilds_the_candidate_exactly(tiny_llama: Path) -> None:
    import torch

    from flipscope.attribution.ablate import WeightBank, capture_compression
    from flipscope.models import LoadOptions, load_backend, parse_spec

    base = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu"))
    cand = load_backend(parse_spec(f"hf:{tiny_llama}+rtn:w3g16"), LoadOptions(device="cpu"))
    bank = WeightBank(base.model)  # type: ignore[attr-defined]
    changed = capture_compression(bank, parse_spec(f"hf:{tiny_llama}+rtn:w3g16"), base)
    ids = torch.tensor([[5, 17, 42, 9, 100, 3]])
    with torch.no_grad():
        reference = base.model(ids).logits  # type: ignore[attr-defined]
        bank.use(dict.fromkeys(changed, "candidate"))  # compress every unit → the candidate, bit for bit
        assert torch.equal(base.model(ids).logits, cand.model(ids).logits)  # type: ignore[attr-defined]
        units = make_units([(n, 1) for n in changed], "block")
        for unit in units:  # restore one unit at a time, then all: back to the baseline exactly
            bank.use({n: "candidate" for n in changed if n not in unit.linears})
        bank.use({})
        assert torch.equal(base.model(ids).logits, reference)  # type: ignore[attr-defined]
        for name, module in bank.modules.items():
            assert torch.equal(module.weight, bank.baseline[name])


def test_attribute_ranks_units_and_checks_additivity(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flipscope._attribute import AblationSettings, AttributeSettings, attribute
    from flipscope.attribution.run import read_attribution
    from flipscope.cli import cli

    settings = AttributeSettings(by=UnitKind.BLOCK, tasks=(str(mc_file),), limit=None, top=2,
                                 ablation=AblationSettings(corpus=_corpus(tmp_path), chunks=3, ctx=64, device="cpu",
                                                           cache_dir=str(tmp_path / "kld")))  # fmt: skip
    run, folder = attribute(f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w2g16", settings, out=tmp_path / "attr")
    assert [u.unit for u in run.units] != [] and {u.unit for u in run.units} == {"block 0", "block 1"}
    assert run.candidate_kl > 0 and all(u.kl_only >= 0 and u.kl_without >= 0 for u in run.units)
    assert run.units[0].explained >= run.units[1].explained  # ranked
    assert 0.2 < run.sum_single_kl / run.candidate_kl < 5  # additivity reported, roughly additive here
    assert run.flips["planets"].n == 12 and all(u.flips_restored is not None for u in run.units)
    # the candidate's KL equals kld's on the same windows against the same stored baseline
    import flipscope

    kld = flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w2g16"], corpus=settings.ablation.corpus, ctx=64, max_windows=3,
                        cache_dir=tmp_path / "kld", out=tmp_path / "kld-run", device="cpu")  # fmt: skip
    assert run.candidate_kl == pytest.approx(kld.summary[f"hf:{tiny_llama}+rtn:w2g16"].kl_mean.value, rel=1e-6)
    assert read_attribution(folder) == run
    shown = CliRunner().invoke(cli, ["report", str(folder)], terminal_width=200)
    assert shown.exit_code == 0 and "explained" in shown.output and "block 0" in shown.output
    page = tmp_path / "attr.html"
    assert CliRunner().invoke(cli, ["report", str(folder), "--html", str(page)]).exit_code == 0
    html = page.read_text()
    assert 'id="attribute"' in html and f'id="attribution_{folder.name}"' in html and "block 1" in html


def test_advise_meets_its_budget_and_its_plan_runs_as_a_spec(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    import flipscope
    from flipscope._advise import AdviseSettings, advise, q4_k_m_style
    from flipscope._attribute import AblationSettings
    from flipscope.compress import RTNConfig

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 4, 8), group_sizes=(16, 32), by=UnitKind.MODULE, target_bits=5.0,
                              ablation=ablation)  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    assert a.avg_bits <= 5.0 + 1e-9 and a.units == 7  # q k v o gate up down
    assert a.measured_kl > 0 and a.predicted_kl > 0
    w4_bits, _ = a.uniform["w4g16"]
    assert w4_bits == pytest.approx(4 + 16 / 16)  # 4 bits + a float16 scale per 16 weights
    assert list(a.uniform) == ["w2g32", "w2g16", "w4g32", "w4g16", "w8g32", "w8g16"]  # by bits per weight
    assert a.uniform["w4g32"][0] == pytest.approx(4.5) and a.uniform["w4g32"][1] > a.uniform["w4g16"][1] * 0.5
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["avg_bits"] == pytest.approx(a.avg_bits) and plan["predicted_kl"] == pytest.approx(a.predicted_kl)
    assert all(len(row) == 6 for row in plan["sensitivity"].values())
    uniform_w4 = sum(row["w4g16"] for row in plan["sensitivity"].values())  # w4 everywhere fits the budget too
    assert a.predicted_kl <= uniform_w4 + 1e-12
    result = flipscope.compare(f"hf:{tiny_llama}", [f"+plan:{tmp_path / 'plan.json'}"], tasks=[str(mc_file)],
                               out=tmp_path / "run", cache_dir=tmp_path / "cache", device="cpu")  # fmt: skip
    assert result.summary[f"hf:{tiny_llama}+plan:{tmp_path / 'plan.json'}"]["planets"].n == 12
    names = [f"model.layers.{b}.{m}" for b in range(16) for m in ("self_attn.v_proj", "mlp.down_proj", "mlp.up_proj")]
    widths = q4_k_m_style(names, base=RTNConfig(bits=4), more=RTNConfig(bits=6))
    more = sorted({int(n.split(".")[2]) for n, w in widths.items() if w.bits == 6})
    assert more == [0, 1, 4, 7, 10, 13, 14, 15]  # llama.cpp's use_more_bits for 16 blocks
    assert all(widths[n].bits == 4 for n in names if "up_proj" in n)


def test_advise_refines_in_context_and_writes_the_plan_it_measured(tiny_llama: Path, tmp_path: Path) -> None:
    import flipscope
    from flipscope._advise import AdviseSettings, advise
    from flipscope._attribute import AblationSettings

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 3, 4, 8), group_sizes=(16,), by=UnitKind.LINEAR, target_bits=4.5, refine=2,
                              ablation=ablation)  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    assert 1 <= len(a.rounds) <= 2 and all(r.avg_bits <= 4.5 + 1e-9 for r in a.rounds)
    assert a.rounds[-1].kept is False or len(a.rounds) == 2  # stops at the first round that does not improve
    kept = [r.measured_kl for r in a.rounds if r.kept]
    assert a.measured_kl == pytest.approx(min([a.first_kl, *kept]))  # never worse than the plan it started from
    assert a.avg_bits <= 4.5 + 1e-9
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [r["measured_kl"] for r in plan["rounds"]] == [r.measured_kl for r in a.rounds]
    # the plan written is the plan measured: kld of it as a spec, same windows, same stored baseline
    spec = f"+plan:{tmp_path / 'plan.json'}"
    kld = flipscope.kld(f"hf:{tiny_llama}", [spec], corpus=ablation.corpus, ctx=64, max_windows=2, cache_dir=tmp_path,
                        out=tmp_path / "kld-run", device="cpu")  # fmt: skip
    assert a.measured_kl == pytest.approx(kld.summary[f"hf:{tiny_llama}{spec}"].kl_mean.value, rel=1e-6)


def test_advise_refines_a_given_plan_and_refuses_widths_it_cannot_choose(tiny_llama: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from flipscope._advise import AdviseSettings, advise
    from flipscope._attribute import AblationSettings
    from flipscope.compress import RTNConfig
    from flipscope.compress.plan import write_plan

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=1, ctx=64, device="cpu", cache_dir=str(tmp_path))
    start = write_plan(tmp_path / "start.json", RTNConfig(bits=4, group_size=16), {"model.layers.0.mlp.down_proj":
                       RTNConfig(bits=8, group_size=16)})  # fmt: skip
    settings = AdviseSettings(bits=(2, 4, 8), group_sizes=(16,), target_bits=5.0, refine=1, start=str(start),
                              ablation=ablation)  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "refined.json")
    assert a.predicted_kl is None and len(a.rounds) == 1 and a.rounds[0].passes == 1 + 2 * 13 + 1  # 14 Linears
    assert a.measured_kl <= a.first_kl and a.avg_bits <= 5.0 + 1e-9
    # a plan over the budget: refused as it is, brought under it by a refinement round (one width down everywhere)
    wide = write_plan(tmp_path / "wide.json", RTNConfig(bits=8, group_size=16), {})
    over = AdviseSettings(bits=(2, 4, 8), group_sizes=(16,), target_bits=5.0, start=str(wide), ablation=ablation)
    with pytest.raises(FlipscopeError, match=r"9.000 bits per weight after 0 refinement rounds, above --target-bits"):
        advise(f"hf:{tiny_llama}", over, out=tmp_path / "x.json")
    fitted = advise(f"hf:{tiny_llama}", replace(over, refine=1), out=tmp_path / "fitted.json")
    assert fitted.rounds[0].kept and fitted.avg_bits <= 5.0 + 1e-9 and fitted.measured_kl > fitted.first_kl
    stray = write_plan(tmp_path / "stray.json", RTNConfig(bits=4, group_size=16), {"model.layers.9.mlp.down_proj":
                       RTNConfig(bits=8, group_size=16)})  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"names 1 layer.* this model does not have"):
        advise(f"hf:{tiny_llama}", replace(over, start=str(stray)), out=tmp_path / "x.json")
    with pytest.raises(FlipscopeError, match="group size 48 does not divide"):
        advise(f"hf:{tiny_llama}", AdviseSettings(bits=(4,), group_sizes=(48,), target_bits=5.0, ablation=ablation),
               out=tmp_path / "x.json")  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"q_proj is at 4 bits, group 16"):
        advise(f"hf:{tiny_llama}", AdviseSettings(bits=(2, 8), group_sizes=(16,), target_bits=5.0, start=str(start),
                                                  ablation=ablation), out=tmp_path / "x.json")  # fmt: skip


def test_advise_command_line_by_module_spans(tiny_llama: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flipscope.cli import cli

    args = ["advise", f"hf:{tiny_llama}", "--bits", "2,8", "--group", "16", "--by", "module", "--span", "1",
            "--target-bits", "5", "--refine", "1", "--corpus", _corpus(tmp_path), "--chunks", "1", "--ctx", "64",
            "--device", "cpu", "--out", str(tmp_path / "plan.json")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "refinement round 1 (" in result.output and "14 units" in result.output  # 2 blocks × 7 kinds
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["span"] == 1 and set(plan["sensitivity"]) >= {"q_proj block 0", "down_proj block 1"}
    bad = CliRunner().invoke(cli, [*args[:6], "--by", "block", *args[8:]])  # --span with --by block
    assert isinstance(bad.exception, FlipscopeError) and "--by block has no spans" in str(bad.exception)
