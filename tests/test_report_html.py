"""`flipscope report --html/--md`: rendered from stored runs only; every candidate and task present, numbers equal to
the runs' summaries, the explorer listing exactly the flipped items; and the page in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import flipscope
from flipscope.cli import cli
from flipscope.report import load_run
from mtbench_data import write_mtbench
from tests.conftest import Script
from tests.test_gsm8k_pipeline import _question, _row, _wheel

SECOND_TASK = [
    {"id": f"c{i}", "question": f"Which colour is number {i % 3}?", "choices": ["red", "green", "blue"],
     "answer": i % 3}
    for i in range(15)
]  # fmt: skip


def _choices(shift: int):  # type: ignore[no-untyped-def]
    """Log-likelihoods picking option (i + shift·[i % 5 == 0]) % k: the target for most items (i % k), a flip on
    every fifth item of a candidate."""

    def logprobs(i: int, request: Any) -> tuple[float, ...]:
        k = len(request.continuations)
        pick = (i + (shift if i % 5 == 0 else 0)) % k
        return tuple(-0.5 - 0.1 * o if o == pick else -2.0 - 0.1 * o for o in range(k))

    return logprobs


def make_runs(scripts: dict[str, Script], root: Path) -> dict[str, Path]:
    """A comparison (two multiple-choice tasks and GSM8K, two candidates, a noise floor) and an MT-Bench run, both
    against mock:b, and a kld-free setup; returns their folders."""
    targets = _wheel()

    def answer(wrong_every: int):  # type: ignore[no-untyped-def]
        def text(prompt: str) -> str:
            if not re.search(r"Q: Problem \d+: how many\?\nA:$", prompt):  # an MT-Bench turn
                return f"An answer{' with changes' if wrong_every else ''} to: {prompt[-40:]}"
            q = _question(prompt)
            n = int(q.split()[1].rstrip(":"))
            value = int(targets[q]) + (1 if wrong_every and n % wrong_every == 0 else 0)
            return f" Work {n}, then more work. The answer is {value}."

        return text

    scripts["b"] = Script(_choices(0), rows=lambda i, o: _row(0.0), answer=answer(0))
    scripts["c1"] = Script(_choices(1), rows=lambda i, o: _row(0.1), answer=answer(3))
    scripts["c2"] = Script(_choices(2), rows=lambda i, o: _row(0.4), answer=answer(2))
    colours = root / "colours.jsonl"
    colours.write_text("".join(json.dumps(r) + "\n" for r in SECOND_TASK))
    planets = root / "planets.jsonl"
    planets.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which planet is number {i % 4 + 1}?",
                                           "choices": ["Mercury", "Venus", "Earth", "Mars"], "answer": i % 4}) + "\n"
                               for i in range(20)))  # fmt: skip
    from flipscope.runs.noise import NoiseFloor

    flipscope.compare("mock:b", ["mock:c1", "mock:c2"], tasks=[str(planets), str(colours), "gsm8k"], limit=12,
                      out=root / "compare", cache_dir=root / "cache", noise_floor=NoiseFloor(1))  # fmt: skip
    data = write_mtbench(root / "mt-data", per_category=1)
    scripts["j"] = Script(
        lambda i, r: (0.0,), answer=lambda prompt: "Rating: [[7]]" if "<A>" not in prompt else "[[A]]"
    )
    settings = flipscope.MTBenchSettings(judge="mock:j", data=str(data), cache_dir=str(root / "cache"))
    flipscope.mtbench("mock:b", ["mock:c1"], settings, out=root / "mtbench")
    return {"compare": root / "compare", "mtbench": root / "mtbench"}


class _Tables(HTMLParser):
    """The summary table's rows (cells' text and data-sort) and the JSON script blocks, by id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self.scripts: dict[str, str] = {}
        self._in_summary = False
        self._cell: list[str] | None = None
        self._sort = ""
        self._script: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "summary-table":
            self._in_summary = True
        elif self._in_summary and tag == "tr":
            self.rows.append([])
        elif self._in_summary and tag == "td":
            self._cell, self._sort = [], a.get("data-sort") or ""
        elif tag == "script" and a.get("type") == "application/json":
            self._script = a.get("id") or ""
            self.scripts[self._script] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_summary = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(("".join(self._cell).strip(), self._sort))
            self._cell = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script is not None:
            self.scripts[self._script] += data


def expected_flips(folder: Path) -> set[tuple[str, str, str, str]]:
    """(task, candidate, item_id, direction) of every flipped item, counted straight from records.parquet."""
    records = pd.read_parquet(folder / "records.parquet")
    base = records[records.role == "baseline"].set_index(["task", "item_id"])["correct"]
    out = set()
    for row in records[records.role == "candidate"].itertuples():
        was = bool(base[(row.task, row.item_id)])
        if was != bool(row.correct):
            out.add((row.task, row.model, row.item_id, "C→I" if was else "I→C"))
    return out


def test_html_report_holds_every_candidate_task_number_and_exactly_the_flipped_items(
    scripts: dict[str, Script], tmp_path: Path
) -> None:
    runs = make_runs(scripts, tmp_path)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(runs["compare"]), str(runs["mtbench"]), "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert re.search(r"<(script|link|img)\b[^>]*\b(src|href)=", page) is None  # self-contained: all embedded
    parsed = _Tables()
    parsed.feed(page)
    run = load_run(runs["compare"])
    shown = {(cells[0][0], cells[1][0]): cells for cells in parsed.rows if cells}
    for candidate, per_task in run.summary.items():
        name = candidate  # mock specs do not extend the baseline's: shown whole
        assert set(per_task) == {"planets", "colours", "gsm8k", "all"}
        for task, s in per_task.items():
            cells = shown[(name, task)]
            assert int(cells[2][0]) == s.n
            assert float(cells[6][1]) == pytest.approx(s.flips)  # flips (sort key: the exact value)
            assert (int(cells[7][0]), int(cells[8][0])) == (s.flips_c2i, s.flips_i2c)
            assert float(cells[3][1]) == pytest.approx(s.acc_baseline) and float(cells[4][1]) == pytest.approx(
                s.acc_candidate
            )
            assert cells[6][0].startswith(f"{100 * (s.flips or 0):.1f}")
            if s.choice_kl_mean is not None:
                assert float(cells[11][1]) == pytest.approx(s.choice_kl_mean)
    assert len(shown) == 2 * 4
    explorer = json.loads(parsed.scripts["explorer-data"])
    listed = {(r["task"], r["candidate"], r["item_id"], r["direction"]) for r in explorer}
    assert len(listed) == len(explorer) and listed == expected_flips(runs["compare"])
    assert {r["task"] for r in explorer} == {"planets", "colours", "gsm8k"}  # free-form flips too
    free = next(r for r in explorer if r["task"] == "gsm8k")
    assert "<ins>" in free["candidate_text"] or "<del>" in free["baseline_text"]  # generations diff-highlighted
    summed = sum(s.flips_c2i + s.flips_i2c for per in run.summary.values() for t, s in per.items() if t != "all")
    assert len(explorer) == summed
    figures = [k for k in parsed.scripts if k.endswith("-data") and k != "explorer-data"]
    assert {"accuracy_vs_flips-data", "choice_kl_vs_flips-data", "flips_by_margin-data"} <= set(figures)
    assert any(k.startswith("mtbench_teacher_kl") for k in figures) and 'id="mtbench"' in page
    rho = re.search(r"Spearman ρ\(KL, flips\) = ([+-]\d\.\d\d) over 2 candidates", page)
    assert rho is not None  # the paper's correlation, across the candidates


def test_markdown_report_has_the_table_and_the_key_plots_as_png(scripts: dict[str, Script], tmp_path: Path) -> None:
    runs = make_runs(scripts, tmp_path)
    result = CliRunner().invoke(cli, ["report", str(runs["compare"]), "--md", str(tmp_path / "card" / "r.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "card" / "r.md").read_text()
    run = load_run(runs["compare"])
    for candidate, per_task in run.summary.items():
        for task, s in per_task.items():
            line = next(x for x in text.splitlines() if x.startswith(f"| {candidate} | {task} |"))
            assert f"| {s.flips_c2i} | {s.flips_i2c} |" in line and f"| {s.n} |" in line
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(links) >= 4
    for link in links:
        assert (tmp_path / "card" / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reports_refuse_runs_of_different_baselines(
    scripts: dict[str, Script], tiny_llama: Path, tmp_path: Path
) -> None:
    runs = make_runs(scripts, tmp_path)
    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 40)
    flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g16", "+noise:0.05"], corpus=str(corpus), ctx=64, max_windows=4,
                  out=tmp_path / "kld", cache_dir=tmp_path / "kcache", device="cpu")  # fmt: skip
    result = CliRunner().invoke(cli, ["report", str(runs["compare"]), str(tmp_path / "kld"), "--html", "x.html"])
    assert result.exit_code != 0 and "different baselines" in str(result.exception)
    out = tmp_path / "kld.html"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "kld"), "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert 'id="kld"' in page and "+rtn:w4g16" in page and "+noise:0.05" in page
    assert 'id="explorer-data"' not in page  # no comparison: no explorer


def chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium"):
        for folder in ("/usr/lib/chromium",):
            if os.access(Path(folder) / name, os.X_OK):
                return str(Path(folder) / name)
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_page_in_a_headless_browser(scripts: dict[str, Script], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium: install Debian's chromium-headless-shell (apt-get install chromium-headless-shell)")
    runs = make_runs(scripts, tmp_path)
    out = tmp_path / "report.html"
    assert CliRunner().invoke(cli, ["report", str(runs["compare"]), "--html", str(out)]).exit_code == 0
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
        )
        page.goto(out.as_uri())
        page.wait_for_selector("#accuracy_vs_flips .main-svg", timeout=30_000)  # plotly drew the figure
        total = len(json.loads(page.inner_text("#explorer-data")))
        visible = "#explorer tbody tr:not([hidden])"
        assert page.locator(visible).count() == min(total, 50) and total > 0  # 50 at first, then "show more"
        page.select_option("#filter-direction", "C→I")
        c2i = page.locator(visible).count()
        page.select_option("#filter-direction", "")
        page.select_option("#filter-task", "gsm8k")
        gsm8k = page.locator(visible).count()
        assert 0 < c2i < total and 0 < gsm8k < total
        assert page.inner_text("#explorer-count").startswith(f"{gsm8k} of {total}")
        page.click("#summary-detail > summary")  # several tasks: the per-task table is folded under the overview
        page.click("#summary-table th:nth-child(7)")  # sort by flips
        flips = [float(v or "nan") for v in page.eval_on_selector_all(
            "#summary-table tbody tr td:nth-child(7)", "cells => cells.map(c => c.dataset.sort)")]  # fmt: skip
        assert flips == sorted(flips)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_sweep_opens_on_its_overview_in_a_headless_browser(tmp_path: Path) -> None:
    """6 candidates × 8 tasks: the first screen is the overview matrix, the per-task table is folded, the matrix
    sorts by pooled flips, and the page stays short (it was 24,586 px before the overview; 51,660 px in the issue's
    run with its larger explorer)."""
    from flipscope.report.collect import collect
    from flipscope.report.html import write_html
    from tests.test_report_sweep import write_sweep

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium: install Debian's chromium-headless-shell (apt-get install chromium-headless-shell)")
    out = write_html(collect([write_sweep(tmp_path / "sweep")]), tmp_path / "sweep.html")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
        )
        page.goto(out.as_uri())
        page.wait_for_selector("#accuracy_vs_flips .main-svg", timeout=30_000)
        assert page.eval_on_selector("section", "s => s.id") == "overview"  # the page opens on it
        box = page.locator("#overview-1").bounding_box()
        assert box is not None and box["y"] + box["height"] < 900  # the whole matrix on the first screen
        assert page.locator("#overview-1 tbody tr").count() == 6
        assert not page.locator("#summary-table").is_visible()  # folded
        pooled = "#overview-1 th:nth-child(4)"
        assert page.inner_text(pooled).startswith("all")
        page.click(pooled)
        flips = [float(v) for v in page.eval_on_selector_all(
            "#overview-1 tbody td:nth-child(4)", "cells => cells.map(c => c.dataset.sort)")]  # fmt: skip
        assert flips == sorted(flips) and len(set(flips)) > 1
        page.click("#overview-1 th:nth-child(2)")  # by size
        sizes = page.eval_on_selector_all("#overview-1 tbody td:nth-child(2)", "cells => cells.map(c => c.innerText)")
        assert sizes == ["3.25", "4.25", "4.30", "5.25", "6.25", "8.25"]  # nominal bits (g64 scales), one recorded
        height = page.evaluate("document.documentElement.scrollHeight")
        browser.close()
    assert errors == []
    assert height < 8_000, height  # 6,642 px when written
