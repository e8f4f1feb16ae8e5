"""`flipscope screen`: the scripted mock backend (calibration, leave-one-out, --calibrate, --then-compare) and the
tiny random Llama (corpus KL, ranking, run directory, report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flipscope import compare, screen
from flipscope.metrics.calibration import fit, fit_without, predict
from flipscope.store.screen_summary import sample_pairs
from tests.conftest import Script
from tests.test_pipeline import answers, rows_for

V = 16
BASE = {i: (i % 4 if i < 6 else (i + 1) % 4) for i in range(12)}  # right on items 0-5 of mc_file


def candidates(scripts: dict[str, Script], flips: dict[str, int]) -> list[str]:
    """The baseline and one mock candidate per entry, flipping that many of the baseline's right answers."""
    scripts["base"] = Script(answers(BASE), rows_for(0), vocab=V)
    for name, m in flips.items():
        scripts[name] = Script(answers(BASE | {j: (j + 1) % 4 for j in range(m)}), rows_for(1), vocab=V)
    return [f"mock:{name}" for name in flips]


def test_sample_calibration_leaves_each_candidate_out(scripts, mc_file: Path, tmp_path: Path) -> None:
    cands = candidates(scripts, {"c0": 0, "c1": 1, "c2": 2, "c3": 3, "c5": 5, "c6": 6})
    result = screen("mock:base", cands, tasks=[str(mc_file)], sample=12, windows=0, out=tmp_path / "s",
                    cache_dir=tmp_path / "cache")  # fmt: skip
    run = result.run
    assert run.calibration.source == "sample" and run.calibration.pairs == 6
    pairs = sample_pairs(result.sample.run.summary, ["planets"])
    differs = 0
    for c in run.candidates:
        s = result.sample.summary[c.spec]["planets"]
        held_out = predict(fit_without(pairs, c.spec), s.choice_kl_mean)  # type: ignore[arg-type]
        assert c.predicted_flips["planets"] == pytest.approx(tuple(held_out.as_list()))
        assert c.fit_pairs == 5
        with_itself = predict(fit(pairs), s.choice_kl_mean)  # type: ignore[arg-type]
        differs += abs(with_itself.point - held_out.point) > 1e-6
    assert differs >= 3  # a fit that saw the candidate would give other numbers
    order = [c.spec for c in sorted(run.candidates, key=lambda c: c.rank)]
    assert run.ranked_by == "sample choice KL" and order[0] == "mock:c0" and order[-1] == "mock:c6"
    assert any("leave-one-candidate-out" in n for n in run.notes)
    assert all(c.bits is None for c in run.candidates)  # a mock's size is unknown: shown n/a


def test_too_few_pairs_show_sample_flips_and_say_why(scripts, mc_file: Path, tmp_path: Path) -> None:
    cands = candidates(scripts, {"c1": 1, "c3": 3})
    result = screen("mock:base", cands, tasks=[str(mc_file)], sample=12, windows=0, out=tmp_path / "s",
                    cache_dir=tmp_path / "cache")  # fmt: skip
    assert all(c.predicted_flips["planets"] is None for c in result.run.candidates)
    assert result.run.pareto_basis == "sample flips"
    assert any("no prediction of flips" in n and "usable pairs" in n for n in result.run.notes)
    c3 = next(c for c in result.run.candidates if c.spec == "mock:c3")
    assert c3.sample_flips["planets"][0] == pytest.approx(3 / 12)  # type: ignore[index]


def test_calibrate_runs_then_compare_and_report(scripts, mc_file: Path, tmp_path: Path) -> None:
    cands = candidates(scripts, {"c0": 0, "c1": 1, "c2": 2, "c3": 3, "c4": 4, "c6": 6})
    cache = tmp_path / "cache"
    earlier = compare(
        "mock:base", cands[:4], tasks=[str(mc_file)], out=tmp_path / "earlier", cache_dir=cache / "passes"
    )
    result = screen("mock:base", cands, tasks=[str(mc_file)], sample=8, windows=0, calibrate=[earlier.out],
                    then_compare=2, out=tmp_path / "s", cache_dir=cache)  # fmt: skip
    run = result.run
    assert (
        run.calibration.source == "runs" and run.calibration.pairs == 4 and run.calibration.runs == [str(earlier.out)]
    )
    by_spec = {c.spec: c for c in run.candidates}
    assert by_spec["mock:c1"].fit_pairs == 3 and by_spec["mock:c6"].fit_pairs == 4  # its own pair left out
    assert by_spec["mock:c3"].fit_pairs == 3 and by_spec["mock:c3"].measured_from == str(earlier.out)
    assert len(run.then_compare) == 2 and run.full_dir == "full" and (tmp_path / "s" / "full" / "run.json").is_file()
    for spec in run.then_compare:  # measured on every item by the full run
        assert by_spec[spec].measured_from == "full" and by_spec[spec].measured_flips["planets"]
    # report re-renders it from the files, the same numbers
    from flipscope.report.screen_load import load_screen_run
    from flipscope.report.screen_table import predicted_vs_measured, screen_json

    again = load_screen_run(tmp_path / "s")
    assert again.candidates == run.candidates and again.notes == run.notes
    plot = predicted_vs_measured(again)
    assert plot is not None and len(plot.series[0].x) >= 4
    document = screen_json(again)
    first = document["candidates"][0]
    assert {"spec", "corpus_kl", "predicted_flips"} <= set(first)
    assert len(first["predicted_flips"]["planets"]) == 3


def test_tiny_llama_screen_ranks_by_strength_and_report_renders(
    tiny_llama: Path, mc_file: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from flipscope.cli import cli

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 40)
    base = f"hf:{tiny_llama}"
    cands = ["+rtn:w2g16", "+rtn:w8", "+rtn:w4g16", "+rtn:w3g16"]
    result = screen(base, cands, tasks=[str(mc_file)], sample=12, windows=2, ctx=64, corpus=str(corpus),
                    fewshot=0, device="cpu", out=tmp_path / "s", cache_dir=tmp_path / "cache")  # fmt: skip
    run = result.run
    order = [c.spec.split("+")[-1] for c in sorted(run.candidates, key=lambda c: c.rank)]
    assert run.ranked_by == "corpus KL" and order == ["rtn:w8", "rtn:w4g16", "rtn:w3g16", "rtn:w2g16"]
    by = {c.spec.split("+")[-1]: c for c in run.candidates}
    assert by["rtn:w4g16"].bits == pytest.approx(5.0) and by["rtn:w8"].bits == 8.0
    assert all(c.corpus_kl is not None and c.corpus_kl_se is not None for c in run.candidates)
    assert by["rtn:w2g16"].pareto  # the smallest is always on the set
    assert run.corpus_kl_kind == "unbiased estimate"
    folder = tmp_path / "s"
    assert json.loads((folder / "run.json").read_text())["kind"] == "screen"
    assert (folder / "sample" / "records.parquet").is_file() and (folder / "kld" / "positions.parquet").is_file()
    shown = CliRunner().invoke(cli, ["report", str(folder)], terminal_width=250)
    assert shown.exit_code == 0, shown.output
    assert "run fully?" in shown.output and "rtn:w8" in shown.output and "note: calibration" in shown.output
    as_json = CliRunner().invoke(cli, ["report", str(folder), "--json"])
    document = json.loads(as_json.output)
    assert [c["spec"] for c in document["candidates"]] == [c.spec for c in sorted(run.candidates, key=lambda c: c.rank)]
    md = CliRunner().invoke(cli, ["report", str(folder), "--md", str(tmp_path / "r.md")])
    assert md.exit_code == 0, md.output
    assert "predicted flips %" in (tmp_path / "r.md").read_text()


def test_cli_help_and_bad_input() -> None:
    from click.testing import CliRunner

    from flipscope.cli import cli

    shown = CliRunner().invoke(cli, ["screen", "--help"], terminal_width=120)
    assert shown.exit_code == 0 and "run fully?" in shown.output and "--calibrate" in shown.output
    for args, message in ((["--sample", "0"], "--sample must be at least 1"),
                          (["--then-compare", "best"], "give a count")):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "flipscope", "screen", "bundled:smollm2-135m", "+rtn:w8", *args],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_calibrate_must_be_a_compare_run(tmp_path: Path) -> None:
    from flipscope.errors import FlipscopeError

    with pytest.raises(FlipscopeError, match="not a flipscope run directory"):
        screen("mock:base", ["mock:x"], calibrate=[tmp_path / "nothing"], out=tmp_path / "s")
