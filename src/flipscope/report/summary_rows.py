"""The report's tables as rows of cells (display text + sort key), shared by the HTML page and Markdown; the
numbers are formatted as in the terminal tables (``report.table``)."""

from __future__ import annotations

from dataclasses import dataclass

from flipscope.metrics import TaskSummary
from flipscope.report.collect import AttributionDir, CompareRun, KLDRun, MTBenchRun, ReportInput
from flipscope.report.figure import short
from flipscope.report.formatting import num, pct, points, pvalue
from flipscope.report.table import FLOOR_COLUMNS, SEQUENTIAL_COLUMN, floor_cells, sequential_text

SUMMARY_COLUMNS = [
    "candidate",
    "task",
    "n",
    "acc B %",
    "acc C %",
    "Δacc %",
    "flips % [95% CI]",
    "C→I",
    "I→C",
    "all-flips %",
    "McNemar p",
    "choice KL",
    "token KL",
    *FLOOR_COLUMNS,
]


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # None: sorts last
    css: str = ""


@dataclass(frozen=True)
class SummaryRow:
    candidate: str
    task: str
    pooled: bool  # the "all" row of several tasks
    cells: list[Cell]


def _n(value: float | None, text: str) -> Cell:
    return Cell(text, value if value is not None else "")


def _interval(value: float | None, ci: tuple[float, float] | None) -> str:
    return f"{pct(value)} [{pct(ci[0])}, {pct(ci[1])}]" if ci is not None else pct(value)


def task_cells(candidate: str, task: str, s: TaskSummary, floor: TaskSummary | None, *, has_floor: bool) -> list[Cell]:
    cells = [
        Cell(candidate, candidate, "text"),
        Cell(task, task, "text"),
        Cell(str(s.n), s.n),
        _n(s.acc_baseline, _interval(s.acc_baseline, s.acc_baseline_ci)),
        _n(s.acc_candidate, _interval(s.acc_candidate, s.acc_candidate_ci)),
        _n(s.delta_acc, pct(s.delta_acc, signed=True)),
        _n(s.flips, _interval(s.flips, s.flips_ci)),
        Cell(str(s.flips_c2i), s.flips_c2i),
        Cell(str(s.flips_i2c), s.flips_i2c),
        _n(s.all_flips, pct(s.all_flips)),
        Cell(pvalue(s.mcnemar_p), s.mcnemar_p),
        _n(s.choice_kl_mean, num(s.choice_kl_mean)),
        _n(s.token_kl_mean, num(s.token_kl_mean)),
    ]
    if has_floor:
        shown, verdict = floor_cells(s, floor)
        cells += [Cell(shown, floor.flips if floor and floor.flips is not None else ""),
                  Cell(verdict, verdict, "above" if verdict == "above" else "floor")]  # fmt: skip
    else:
        cells += [Cell("–", ""), Cell("–", "")]
    return cells


def sequential_cell(s: TaskSummary) -> Cell:
    """``compare --sequential``'s decision and n ("below · n=120/300"), sorted by n."""
    q = s.sequential
    return Cell(sequential_text(s), "" if q is None else q.n, f"seq-{q.decision.replace(' ', '-')}" if q else "")


def has_sequential(data: ReportInput) -> bool:
    return any(s.sequential is not None for run in data.compares for per in run.run.summary.values()
               for s in per.values())  # fmt: skip


def summary_rows(data: ReportInput) -> tuple[list[str], list[SummaryRow]]:
    """One row per (candidate, task) of every compare run, the pooled "all" row included; a "sequential" column
    (decision · n) where some run is a ``compare --sequential`` one."""
    rows = []
    sequential = has_sequential(data)
    for run in data.compares:
        floor = run.run.noise_floor.summary if run.run.noise_floor is not None else None
        for candidate, per_task in run.run.summary.items():
            name = short(candidate, data.baseline)
            for task, s in per_task.items():
                cells = task_cells(name, task, s, (floor or {}).get(task), has_floor=floor is not None)
                cells += [sequential_cell(s)] if sequential else []
                rows.append(SummaryRow(candidate, task, task == "all", cells))
    return [*SUMMARY_COLUMNS, *([SEQUENTIAL_COLUMN] if sequential else [])], rows


KLD_COLUMNS = ["candidate", "PPL(B)", "PPL(C)", "ln PPL ratio", "KL mean", "KL p99", "same top %", "windows left out"]


def kld_rows(run: KLDRun) -> tuple[list[str], list[list[Cell]]]:
    base = str(run.run.baseline["spec"])
    rows = []
    for label, x in run.run.summary.items():
        rows.append(
            [
                Cell(short(label, base), label, "text"),
                Cell(num(x.ppl_base.value, 3), x.ppl_base.value),
                Cell(num(x.ppl_cand.value, 3), x.ppl_cand.value),
                Cell(f"{num(x.ln_ppl_ratio.value)} ± {num(x.ln_ppl_ratio.err)}", x.ln_ppl_ratio.value),
                Cell(f"{num(x.kl_mean.value)} ± {num(x.kl_mean.err)}", x.kl_mean.value),
                Cell(num(x.kl_percentiles["99"]), x.kl_percentiles["99"]),
                Cell(pct(x.same_top.value), x.same_top.value),
                Cell(str(len(x.excluded_windows)), len(x.excluded_windows)),
            ]
        )
    kinds = {"KL mean": run.run.settings.kl_forward, "KL p99": run.run.settings.kl_positions}
    columns = [f"{c} ({kinds[c]})" if c in kinds and kinds[c] != "exact" else c for c in KLD_COLUMNS]
    return columns, rows


def mtbench_rows(run: MTBenchRun) -> tuple[list[str], list[list[Cell]]]:
    """Per candidate: the judge-free distances over all questions, and each judge's overall grade and win rate."""
    base = run.run.baseline.spec
    judges = list(run.run.judges)
    columns = ["candidate", "teacher KL", "ΔNLL/token", "identical %", "first div. (median)"]
    for judge in judges:
        columns += [f"grade · {judge}", f"win rate % · {judge}"]
    rows = []
    for cand, per in run.summary["distances"].items():
        d = per.get("all") or {}
        row = [
            Cell(short(cand, base), cand, "text"),
            _n(d.get("teacher_kl_mean"), num(d.get("teacher_kl_mean"))),
            _n(d.get("delta_nll_mean"), num(d.get("delta_nll_mean"), 3)),
            _n(d.get("identical"), pct(d.get("identical"))),
            _n(d.get("first_divergence_median"), num(d.get("first_divergence_median"), 0)),
        ]
        for judge in judges:
            j = run.summary.get(judge) or {}
            grade = next((g.get("overall") for g in j.get("grades", []) if g.get("model") == cand), None)
            wins = next((p.get("win_rate") for p in j.get("pairs", []) if p.get("candidate") == cand), None)
            row += [_n(grade, num(grade, 2)), _n(wins, pct(wins))]
        rows.append(row)
    return columns, rows


def attribution_rows(attr: AttributionDir, top: int = 15) -> tuple[list[str], list[list[Cell]]]:
    run = attr.run
    columns = ["rank", "unit", "params", "KL only this", "KL all but this", "explained", "share", "flips restored"]
    rows = []
    for rank, u in enumerate(run.units[:top], start=1):
        share = u.explained / run.candidate_kl if run.candidate_kl > 0 else None
        rows.append([
            Cell(str(rank), rank), Cell(u.unit, u.unit, "text"), Cell(f"{u.params:,}", u.params),
            _n(u.kl_only, num(u.kl_only)), _n(u.kl_without, num(u.kl_without)), _n(u.explained, num(u.explained)),
            _n(share, pct(share)), _n(u.flips_restored, "–" if u.flips_restored is None else str(u.flips_restored)),
        ])  # fmt: skip
    return columns, rows


SAMPLED_COLUMNS = ["candidate", "task", "items × draws", "T", "pass@1 B %", "pass@1 C %", "flips/draw % ± SE",
                   "sampling floor % ± SE", "excess pp ± SE"]  # fmt: skip


def sampled_rows(run: CompareRun) -> tuple[list[str], list[list[Cell]]]:
    """``compare --samples``: each candidate's flips per draw beside the baseline's sampling floor (± SE over
    items), recomputed from the stored summary."""
    from flipscope.metrics.sampling import SampledSummary

    base = run.run.baseline.spec
    rows = []
    sampling = run.run.sampling
    for candidate, tasks in (sampling.summary if sampling is not None else {}).items():
        for task, fields in tasks.items():
            s = SampledSummary.from_fields(fields)
            rows.append([
                Cell(short(candidate, base), candidate, "text"),
                Cell(task, task, "text"),
                Cell(f"{s.items} × {s.draws}", s.items * s.draws),
                Cell(f"{s.temperature:g}", s.temperature),
                Cell(pct(s.baseline_pass1), s.baseline_pass1),
                Cell(pct(s.candidate_pass1), s.candidate_pass1),
                Cell(points(s.flips.mean, s.flips.err), s.flips.mean),
                Cell(points(s.floor.mean, s.floor.err), s.floor.mean),
                Cell(points(s.excess.mean, s.excess.err, signed=True), s.excess.mean),
            ])  # fmt: skip
    return SAMPLED_COLUMNS, rows
