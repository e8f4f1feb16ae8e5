"""``compare --sequential`` and ``screen`` end to end on the bundled model, and through ``flipscope report``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flipscope import SequentialPlan, compare, screen

pytestmark = pytest.mark.e2e

BASE = "bundled:smollm2-135m"


def report(folder: Path, html: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "flipscope", "report", str(folder), "--html", str(html)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_sequential_stops_the_two_bit_candidate_early(tmp_path: Path) -> None:
    plan = SequentialPlan(flip_budget=15, chunk=20)
    result = compare(BASE, ["+rtn:w8", "+rtn:w2g64"], tasks=["arc_easy"], limit=80, out=tmp_path / "seq",
                     cache_dir=tmp_path / "cache", sequential=plan)  # fmt: skip
    w8 = result.summary[f"{BASE}+rtn:w8"]["arc_easy"].sequential
    w2 = result.summary[f"{BASE}+rtn:w2g64"]["arc_easy"].sequential
    assert w8 is not None and w2 is not None
    assert w2.decision == "above" and w2.n < 80  # a 2-bit model flips far more than 15%: decided before the cap
    assert w8.decision != "above" and w8.n >= w2.n  # 8 bits flips almost nothing: never "above"
    report(result.out, tmp_path / "seq.html")
    page = (tmp_path / "seq.html").read_text()
    assert f"above · n={w2.n}/80" in page and 'id="overview"' in page


def test_screen_ranks_by_strength_and_reports(tmp_path: Path) -> None:
    cands = ["+rtn:w8", "+rtn:w4g64", "+rtn:w2g64"]
    result = screen(BASE, cands, tasks=["arc_easy", "piqa"], sample=10, windows=2, out=tmp_path / "screen",
                    cache_dir=tmp_path / "cache")  # fmt: skip
    ranked = sorted(result.run.candidates, key=lambda c: c.rank)
    assert [c.spec.removeprefix(BASE) for c in ranked] == cands  # corpus KL orders the widths
    report(result.out, tmp_path / "screen.html")
    assert "Pareto" in (tmp_path / "screen.html").read_text()
