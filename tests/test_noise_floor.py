"""The noise floor: the baseline run again with another batch size (or dtype) and paired with itself, shown beside
every candidate's flips; a candidate within the floor's interval is marked indistinguishable from it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from flipscope import compare
from flipscope.cli import cli
from flipscope.errors import FlipscopeError
from flipscope.metrics import summarize
from flipscope.metrics.noise_floor import indistinguishable
from flipscope.metrics.records import ItemScore, Pair
from flipscope.report import load_run
from flipscope.runs.noise import NoiseFloor


def _summary(flipped: int, n: int = 100):  # type: ignore[no-untyped-def]
    right = ItemScore("t", "", "", 0, (0.0, -1.0))
    wrong = ItemScore("t", "", "", 0, (-1.0, 0.0))
    pairs = [Pair(right, wrong if i < flipped else right) for i in range(n)]
    return summarize(pairs)


def test_indistinguishable_means_within_the_floor_interval() -> None:
    floor = _summary(2)  # 2% flips, 95% interval about [0.6%, 7%]
    assert floor.flips_ci is not None and floor.flips_ci[1] > 0.05
    assert indistinguishable(_summary(3), floor) is True
    assert indistinguishable(_summary(30), floor) is False


def test_noise_floor_settings() -> None:
    assert NoiseFloor.default(16) == NoiseFloor(1) and NoiseFloor.default(1) == NoiseFloor(8)
    assert NoiseFloor(1, "bfloat16").setup(16, "float32") == "batch 16 → 1, float32 → bfloat16"
    with pytest.raises(FlipscopeError, match="exactly as the baseline"):
        NoiseFloor(16).check(16, "float32")


def test_compare_with_a_noise_floor(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    result = compare(
        f"hf:{tiny_llama}",
        ["+rtn:w2g16"],
        tasks=[str(mc_file)],
        batch_size=4,
        noise_floor=NoiseFloor(1),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    floor = result.run.noise_floor
    assert floor is not None and floor.setup == "batch 4 → 1" and floor.batch_size == 1
    s = floor.summary["planets"]
    assert s.n == 12 and s.flips is not None and s.flips <= 1 / 12  # the same weights: (almost) nothing flips
    assert s.token_kl_mean is not None and s.token_kl_mean < 1e-6
    assert floor.model.passes["planets"] != result.run.baseline.passes["planets"]  # its own pass: batch in the key
    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    assert (records.role == "noise floor").sum() == 12
    assert load_run(tmp_path / "run").noise_floor == floor
    shown = CliRunner().invoke(cli, ["report", str(tmp_path / "run")], terminal_width=250)
    assert shown.exit_code == 0 and "noise floor (batch 4 → 1)" in shown.output and "floor flips%" in shown.output


def test_noise_floor_command(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        cli,
        [
            "noise-floor",
            f"hf:{tiny_llama}",
            "--tasks",
            str(mc_file),
            "--batch-size",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        terminal_width=250,
    )
    assert out.exit_code == 0, out.output
    run = load_run(tmp_path / "run")
    assert run.candidates == [] and run.noise_floor is not None and run.noise_floor.setup == "batch 1 → 8"
    bad = CliRunner().invoke(cli, ["compare", f"hf:{tiny_llama}"])
    assert bad.exit_code != 0 and "noise-floor" in bad.output
