"""A sweep's overview: one compare run as a candidates × tasks matrix (flips coloured by size, Δacc beside them, the
noise floor's row and the cells within it marked, the pooled "all" column, the size and KL to sort by), shown first
in the HTML and Markdown reports when a run has several candidates or tasks; the per-task table folds below it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flipscope.metrics import TaskSummary
from flipscope.metrics.noise_floor import indistinguishable
from flipscope.report.collect import CompareRun, ReportInput
from flipscope.report.figure import short
from flipscope.report.formatting import num, pct
from flipscope.report.table import sequential_text
from flipscope.store import ModelEntry


@dataclass(frozen=True)
class MatrixCell:
    """One candidate on one task: flips % (``text``, coloured by ``heat``, 0–1 of the matrix's largest), Δacc
    beside it, the sequential decision where there is one; ``within_floor``: its flips are inside the noise floor's
    95% interval (cannot be told apart from it)."""

    text: str
    sort: float | str  # the exact flip rate ("" where none: sorts last)
    delta: str  # Δacc in percentage points, signed
    heat: float
    within_floor: bool
    note: str  # compare --sequential: "below · n=120/300"; else ""
    title: str  # hover text: the numbers behind the cell


@dataclass(frozen=True)
class SizeCell:
    text: str  # bits per weight: measured ("4.30") or named in the spec ("w4")
    sort: float | str
    title: str


@dataclass(frozen=True)
class MatrixRow:
    candidate: str  # short name, as in every plot
    spec: str
    size: SizeCell
    kl: str
    kl_sort: float | str
    pooled: MatrixCell | None  # the "all" column (None with one task)
    cells: list[MatrixCell]


@dataclass(frozen=True)
class Overview:
    folder: str
    tasks: list[str]
    kl_label: str  # which KL the KL column holds
    floor: list[str] | None  # the noise floor's flips per column (pooled first where there is a pooled column)
    rows: list[MatrixRow]
    has_size: bool


def wants_overview(data: ReportInput) -> bool:
    """A run with several candidates or several tasks opens on the overview."""
    return any(len(r.run.summary) > 1 or len(r.run.tasks) > 1 for r in data.compares)


def _bits(value: Any) -> float | None:
    """The first average bits per weight recorded anywhere in a model's details (a plan records it)."""
    if isinstance(value, dict):
        for key in ("avg_bits_per_weight", "bits_per_weight"):
            if isinstance(value.get(key), int | float):
                return float(value[key])
        for inner in value.values():
            found = _bits(inner)
            if found is not None:
                return found
    return None


def size_cell(entry: ModelEntry | None, spec: str) -> SizeCell:
    """Bits per weight: measured where the details record it, else the nominal bits of the spec's compression
    (``compress.size.nominal_bits``: codes, scales and zero points), else unknown."""
    measured = _bits(entry.details) if entry is not None else None
    if measured is not None:
        return SizeCell(f"{measured:.2f}", measured, "average bits per weight, as recorded by the compression")
    nominal = _nominal(spec)
    if nominal is not None:
        return SizeCell(f"{nominal:.2f}", nominal, "nominal bits per weight of the spec's compression")
    return SizeCell("—", "", "size not recorded")


def _nominal(spec: str) -> float | None:
    """The nominal bits per weight of the compression a spec names after its model (None: none, or unknown)."""
    from flipscope.compress import parse_method
    from flipscope.compress.size import nominal_bits
    from flipscope.errors import FlipscopeError

    methods = spec.split("+")[1:]
    try:
        configs = [parse_method(m) for m in methods]
    except (FlipscopeError, ValueError):
        return None
    return nominal_bits(configs, "unknown") if configs else None


def _cell(s: TaskSummary, floor: TaskSummary | None, top: float) -> MatrixCell:
    same = indistinguishable(s, floor) if floor is not None else None
    ci = f" [{pct(s.flips_ci[0])}, {pct(s.flips_ci[1])}]" if s.flips_ci else ""
    title = (f"flips {pct(s.flips)}%{ci} of {s.n} items (C→I {s.flips_c2i}, I→C {s.flips_i2c}); "
             f"Δacc {pct(s.delta_acc, signed=True)} pp")  # fmt: skip
    if floor is not None and floor.flips is not None:
        title += f"; noise floor {pct(floor.flips)}%" + (" (within its interval)" if same else "")
    return MatrixCell(
        text=pct(s.flips),
        sort=s.flips if s.flips is not None else "",
        delta=pct(s.delta_acc, signed=True),
        heat=0.0 if s.flips is None or top <= 0 else min(1.0, s.flips / top),
        within_floor=bool(same),
        note=sequential_text(s) if s.sequential is not None else "",
        title=title,
    )


def _kl(per_task: dict[str, TaskSummary], key: str, field: str) -> float | None:
    s = per_task.get(key)
    value = getattr(s, field) if s is not None else None
    return value if isinstance(value, float) else None


def run_overview(run: CompareRun, baseline: str) -> Overview:
    tasks = [t.name for t in run.run.tasks]
    key = "all" if len(tasks) > 1 else tasks[0]
    floor = run.run.noise_floor.summary if run.run.noise_floor is not None else None
    top = max((s.flips or 0.0 for per in run.run.summary.values() for s in per.values()), default=0.0)
    field = "token_kl_mean"
    if any(_kl(per, key, field) is None for per in run.run.summary.values()):
        field = "choice_kl_mean"  # the answer-token KL where every candidate has it
    entries = {c.spec: c for c in run.run.candidates}
    rows = []
    for spec, per_task in run.run.summary.items():
        kl = _kl(per_task, key, field)
        cells = [_cell(per_task[t], (floor or {}).get(t), top) for t in tasks if t in per_task]
        pooled = _cell(per_task["all"], (floor or {}).get("all"), top) if len(tasks) > 1 else None
        rows.append(MatrixRow(short(spec, baseline), spec, size_cell(entries.get(spec), spec), num(kl),
                              kl if kl is not None else "", pooled, cells))  # fmt: skip
    floor_row = None
    if floor is not None:
        keys = (["all"] if len(tasks) > 1 else []) + tasks
        floor_row = [pct(floor[k].flips) if k in floor else "—" for k in keys]
    label = {"token_kl_mean": "token KL", "choice_kl_mean": "choice KL"}[field]
    return Overview(
        folder=str(run.folder.name),
        tasks=tasks,
        kl_label=f"{label}{' (pooled)' if len(tasks) > 1 else ''}",
        floor=floor_row,
        rows=rows,
        has_size=any(r.size.sort != "" for r in rows),
    )


def overviews(data: ReportInput) -> list[Overview]:
    return [run_overview(r, data.baseline) for r in data.compares] if wants_overview(data) else []


def markdown_overview(view: Overview) -> list[str]:
    """The matrix as a Markdown table: "flips % (Δacc)" per cell, "≈" where within the noise floor."""

    def cell(c: MatrixCell | None) -> str:
        if c is None:
            return "—"
        return f"{'≈ ' if c.within_floor else ''}{c.text} ({c.delta})" + (f" · {c.note}" if c.note else "")

    pooled = view.rows and view.rows[0].pooled is not None
    head = ["candidate", *(["bits/weight"] if view.has_size else []), view.kl_label,
            *(["all"] if pooled else []), *view.tasks]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    if view.floor is not None:
        lead = ["noise floor", *([""] if view.has_size else []), ""]
        lines.append("| " + " | ".join([*lead, *view.floor]) + " |")
    for r in view.rows:
        values = [r.candidate.replace("|", "\\|"), *([r.size.text] if view.has_size else []), r.kl,
                  *([cell(r.pooled)] if pooled else []), *(cell(c) for c in r.cells)]  # fmt: skip
        lines.append("| " + " | ".join(values) + " |")
    return lines
