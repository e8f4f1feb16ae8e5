"""A sweep's report (many candidates × many tasks, hand-made records, no model): the overview matrix first, one row
per candidate with every task's flips, Δacc, the pooled column and the noise floor marked; warnings grouped by
kind; plots without text labels; sequential runs show their decision and n."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from flipscope.metrics import ItemScore, summarize_run
from flipscope.metrics.noise_floor import floor_label
from flipscope.metrics.sequential import SequentialPlan
from flipscope.metrics.sequential_summary import with_sequential
from flipscope.store import ModelEntry, NoiseFloorEntry, RunFile, Settings, TaskEntry, records_frame, write_run

BASE = "bundled:smollm2-135m"
#: task → number of options (the 8-task suite's shapes)
TASKS = {"boolq": 2, "piqa": 2, "winogrande": 2, "hellaswag": 4, "arc_easy": 4, "arc_challenge": 4,
         "openbookqa": 4, "mmlu": 4}  # fmt: skip
CANDIDATES = [f"{BASE}+rtn:w{b}g64" for b in (8, 6, 5, 4, 3)] + [f"{BASE}+rtn:plan=mixed.json"]


def _logprobs(pick: int, k: int) -> tuple[float, ...]:
    return tuple(-0.5 if o == pick else -2.0 - 0.1 * o for o in range(k))


def _scores(rate: float, seed: int, items: int, *, collapse: str = "") -> list[ItemScore]:
    """Per task, ``items`` items; the baseline (rate 0) right on 70%; others change the baseline's answer on about
    ``rate`` of the items. ``collapse``: a task on which this model answers option 0 nearly always."""
    out = []
    for task, k in TASKS.items():
        rng = random.Random(f"{task}-{seed}")
        base_rng = random.Random(task)
        for i in range(items):
            target = base_rng.randrange(k)
            pick = target if base_rng.random() < 0.7 else (target + 1) % k
            if rate and rng.random() < rate:
                pick = (pick + 1) % k
            if task == collapse and rng.random() < 0.95:
                pick = 0
            token_kl = None if not rate else rate * (0.5 + rng.random())
            out.append(ItemScore(task, f"{task}-{i}", "", target, _logprobs(pick, k), token_kl=token_kl))
    return out


def write_sweep(folder: Path, *, items: int = 60, sequential: bool = False, candidates: int = 6) -> Path:
    """A compare run directory of 6 candidates × 8 tasks with a noise floor; candidates flip more as they have fewer
    bits; the 3-bit one collapses on boolq. ``sequential``: summaries carry a ``compare --sequential`` decision.
    ``candidates`` past 6: more plain ones (rtn at other group sizes), flipping like the 8-bit one."""
    import pandas as pd

    specs = CANDIDATES + [f"{BASE}+rtn:w8g{16 * (j + 1)},asym" for j in range(candidates - len(CANDIDATES))]

    base = _scores(0.0, 0, items)
    floor = _scores(0.01, 99, items)
    cands = {c: _scores(0.03 * (min(j, 5) + 1), j + 1, items, collapse="boolq" if j == 4 else "") for j, c in
             enumerate(specs)}  # fmt: skip
    names = list(TASKS)
    summary = {c: summarize_run(base, s, names) for c, s in cands.items()}
    floor_summary = summarize_run(base, floor, names)
    plan = SequentialPlan(flip_budget=10.0, chunk=20)
    if sequential:  # as if each task had 300 items and every model stopped after 60 (compare --sequential's blocks)
        available = dict.fromkeys(names, 300)
        floor_summary = with_sequential(floor_summary, plan, available, floor_run=True)
        summary = {c: with_sequential(per, plan, available, floor=floor_summary) for c, per in summary.items()}
    details = [{"compression": {"rtn": {"avg_bits_per_weight": 4.3}}} if "plan" in c else {} for c in specs]
    run = RunFile(
        created="2025-01-01T00:00:00+00:00",
        flipscope_version="test",
        versions={},
        settings=Settings(
            format="letter",
            fewshot=0,
            limit=items,
            seed=0,
            topk=128,
            tail_samples=64,
            device="cpu",
            dtype="float32",
            sequential=asdict(plan) if sequential else None,
        ),
        baseline=ModelEntry(spec=BASE, role="baseline", fingerprint="fp"),
        candidates=[
            ModelEntry(spec=c, role="candidate", fingerprint=f"fp{j}", details=details[j]) for j, c in enumerate(specs)
        ],
        tasks=[TaskEntry(name=t, meta={} if t == "mmlu" else {"template": t}) for t in names],
        summary=summary,
        noise_floor=NoiseFloorEntry(
            setup="batch 16 → 1",
            batch_size=1,
            dtype="float32",
            model=ModelEntry(spec=floor_label(BASE), role="candidate", fingerprint="fp"),
            summary=floor_summary,
        ),
    )
    labelled = {BASE: ("baseline", base), floor_label(BASE): ("candidate", floor)}
    labelled |= {c: ("candidate", s) for c, s in cands.items()}
    items_frame = pd.DataFrame([{"task": s.task, "item_id": s.item_id, "question": f"Question {s.item_id}?"}
                                for s in base])  # fmt: skip
    write_run(folder, run, records_frame(labelled), items_frame)
    return folder


def test_sweep_fixture_reads_back(tmp_path: Path) -> None:
    from flipscope.report import load_run

    run = load_run(write_sweep(tmp_path / "sweep"))
    assert len(run.summary) == 6 and all(len(per) == 9 for per in run.summary.values())
    assert re.search("w3", list(run.summary)[4]) and run.noise_floor is not None
    assert pytest.approx(run.summary[CANDIDATES[0]]["all"].n) == 8 * 60


def _page(tmp_path: Path, **kwargs: bool) -> tuple[str, Path]:
    from flipscope.report.collect import collect
    from flipscope.report.html import write_html

    folder = write_sweep(tmp_path / "sweep", **kwargs)
    out = write_html(collect([folder]), tmp_path / "report.html")
    return out.read_text(), folder


def _overview_rows(page: str) -> list[list[tuple[str, str, str]]]:
    """The overview matrix's body rows: (class, data-sort, text) per cell."""
    body = page[page.index('id="overview-1"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        cells = re.findall(r'<td class="([^"]*)" data-sort="([^"]*)"[^>]*>(.*?)</td>', row, flags=re.S)
        rows.append([(css, sort, re.sub(r"<[^>]+>", "", text)) for css, sort, text in cells])
    return rows


def test_a_sweep_opens_on_its_overview_matrix(tmp_path: Path) -> None:
    from flipscope.metrics.noise_floor import indistinguishable
    from flipscope.report import load_run

    page, folder = _page(tmp_path)
    run = load_run(folder)
    assert page.index('<section id="overview">') < page.index('<section id="summary">') < page.index('id="plots"')
    detail = page[page.index('<section id="summary">') :]
    assert detail.index('<details id="summary-detail">') < detail.index('id="summary-table"')  # folded
    rows = _overview_rows(page)
    assert len(rows) == 6
    floor = run.noise_floor.summary  # type: ignore[union-attr]
    for row, (spec, per_task) in zip(rows, run.summary.items(), strict=True):
        name, _, kl, *cells = row
        assert name[2] == spec.removeprefix(BASE)
        assert float(kl[1]) == pytest.approx(per_task["all"].token_kl_mean)
        for (css, sort, text), task in zip(cells, ["all", *TASKS], strict=True):
            s = per_task[task]
            assert float(sort) == pytest.approx(s.flips) and f"{100 * (s.flips or 0):.1f}" in text
            assert f"{100 * (s.delta_acc or 0):+.1f}" in text  # Δacc beside the flips
            assert ("within" in css.split()) == bool(indistinguishable(s, floor[task]))
            assert ("≈" in text) == ("within" in css.split())
    nominal = [f"{b + 16 / 64:.2f}" for b in (8, 6, 5, 4, 3)]  # codes + an fp16 scale per group of 64
    assert [r[1][2] for r in rows] == [*nominal, "4.30"]  # sizes: nominal from the spec, or recorded
    assert 'class="floor-row"' in page  # the noise floor's own flips as a row
    assert any("within" in c[0] for r in rows for c in r) and any(c[0] == "m" for r in rows for c in r)


def test_warnings_are_one_line_per_kind_naming_the_cases(tmp_path: Path) -> None:
    from flipscope.report.collect import collect
    from flipscope.report.warning_groups import grouped_warnings

    page, folder = _page(tmp_path)
    warnings = page[page.index('<ul class="warnings">') :]
    lines = re.findall(r"<li><details><summary>(.*?)</summary>", warnings[: warnings.index("</section>")])
    assert lines == ["candidate answers collapse onto one option (flips there mean little) (1): +rtn:w3g64 · boolq"]
    data = collect([folder])
    run = data.compares[0].run
    base = "baseline picked option B on 90% of items where 50% of targets are B (2 options): its answers collapse"
    summary = {
        c: {t: s.model_copy(update={"warnings": [*s.warnings, base] if t == "piqa" else
                                    [*s.warnings, f"token KL missing on {j + 1} of 60 items: …"]
                                    if t in ("mmlu", "arc_easy") and j < 2 else s.warnings})
            for t, s in per.items()}
        for j, (c, per) in enumerate(run.summary.items())
    }  # fmt: skip
    data.compares[0] = replace(data.compares[0], run=run.model_copy(update={"summary": summary}))
    groups = {g.kind.split(" (")[0]: g for g in grouped_warnings(data)}
    assert groups["baseline answers collapse onto one option"].cases == ["piqa"]  # once, not once per candidate
    missing = groups["token KL missing on some items"]
    assert missing.cases == ["+rtn:w8g64 · arc_easy", "+rtn:w8g64 · mmlu", "+rtn:w6g64 · arc_easy",
                             "+rtn:w6g64 · mmlu"]  # fmt: skip
    assert missing.line().startswith("token KL missing on some items (4): +rtn:w8g64 · arc_easy, ")
    assert len(missing.messages) == 4 and "1 of 60" in missing.messages[0]


def test_plots_name_points_on_hover_and_keep_one_colour_per_candidate(tmp_path: Path) -> None:
    import json

    page, _ = _page(tmp_path)
    blocks = re.findall(r'<script type="application/json" id="([^"]+)-data">(.*?)</script>', page, flags=re.S)
    figures = {k: json.loads(v) for k, v in blocks if k != "explorer"}
    bars = figures["accuracy_vs_flips"]["data"]
    assert all(len(t["x"]) == 6 for t in bars)  # pooled: one group per candidate, not 48
    colours: dict[str, str] = {}
    for key in ("choice_kl_vs_flips", "token_kl_vs_flips", "flips_by_margin"):
        for trace in figures[key]["data"]:
            assert "text" not in trace["mode"] if "mode" in trace else True  # no text labels to pile up
            assert colours.setdefault(trace["name"], trace["marker"]["color"]) == trace["marker"]["color"]
    assert len(colours) == 6 and len(set(colours.values())) == 6
    for name, colour in colours.items():  # the overview's swatch: the same colour
        assert re.search(rf'background: {colour}"></span>{re.escape(name)}<', page)


def test_colours_stay_distinct_for_a_hundred_candidates() -> None:
    from flipscope.report.plots import colour

    assert len({colour(i) for i in range(100)}) == 100


def test_sequential_decision_and_n_beside_the_numbers(tmp_path: Path) -> None:
    from rich.console import Console

    from flipscope.report import load_run, print_run

    page, folder = _page(tmp_path, sequential=True)
    run = load_run(folder)  # the decisions recomputed from the records by the run's plan
    stored = RunFile.model_validate_json((folder / "run.json").read_text())
    assert run.summary == stored.summary
    decisions = {s.sequential.decision for per in run.summary.values() for t, s in per.items() if s.sequential}
    assert len(decisions) >= 2  # the fixture shows more than one kind of decision
    assert '<th class="sortable">sequential</th>' in page
    rows = _overview_rows(page)
    console = Console(record=True, width=220)
    print_run(run, console)
    terminal = console.export_text()
    assert " sequential " in terminal
    for row, per_task in zip(rows, run.summary.values(), strict=True):
        for (_, _, text), task in zip(row[4:], TASKS, strict=True):
            q = per_task[task].sequential
            assert q is not None and f"{q.decision} · n=60/300" in text and f"{q.decision} · n=60/300" in terminal
        assert per_task["all"].sequential is None and "n=" not in row[3][2]  # the pooled column: none
    plain, folder = _page(tmp_path / "plain")
    assert ">sequential</th>" not in plain and "n=60/300" not in plain and 'class="seq"' not in plain
    console = Console(record=True, width=220)
    print_run(load_run(folder), console)
    assert " sequential " not in console.export_text()


def test_markdown_of_a_sweep_opens_on_the_matrix(tmp_path: Path) -> None:
    from flipscope.report.collect import collect
    from flipscope.report.markdown import write_markdown

    folder = write_sweep(tmp_path / "sweep")
    text = write_markdown(collect([folder]), tmp_path / "r.md").read_text()
    head = "| candidate | bits/weight | token KL (pooled) | all | " + " | ".join(TASKS) + " |"
    assert text.index(head) < text.index("<details><summary>Per-task detail") < text.index("| candidate | task |")
    assert sum(line.startswith("| +rtn:") for line in text.split("<details>")[0].splitlines()) == 6
    assert "| noise floor |" in text and "≈ " in text
    assert sum(line.startswith("- ") and "collapse" in line for line in text.splitlines()) == 1


def test_the_cloze_hint_follows_the_run_format(tmp_path: Path) -> None:
    from flipscope.report import cloze_hint_tasks, load_run

    run = load_run(write_sweep(tmp_path / "sweep"))
    assert cloze_hint_tasks(run) == ["mmlu"]  # the suite's tasks record their template; mmlu takes --format
    cloze = run.model_copy(update={"settings": run.settings.model_copy(update={"format": "cloze"})})
    assert cloze_hint_tasks(cloze) == []


def test_forty_candidates_stay_one_row_each(tmp_path: Path) -> None:
    from flipscope.report.collect import collect
    from flipscope.report.html import write_html
    from flipscope.report.plots import all_plots

    data = collect([write_sweep(tmp_path / "sweep", candidates=40)])
    page = write_html(data, tmp_path / "r.html").read_text()
    assert len(_overview_rows(page)) == 40
    plots = {p.key: p for p in all_plots(data)}
    assert {len(s.x) for s in plots["accuracy_vs_flips"].series} == {40}  # pooled: 40 groups, not 320
    assert plots["flips_by_margin"].kind == "line"  # 40 bars per bucket would be unreadable
    colours = [s.colour for s in plots["choice_kl_vs_flips"].series]
    assert len(colours) == len(set(colours)) == len(plots["choice_kl_vs_flips"].series)
