"""Terminal rendering of a `flipscope attribute` run: units ranked by the candidate's KL they explain."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table

from flipscope.report.formatting import num
from flipscope.store.attribute_run import AttributionRun


def render_attribution(run: AttributionRun, rows: int = 20) -> Group:
    title = (f"{run.candidate} vs {run.baseline} · by {run.by} · candidate corpus KL {num(run.candidate_kl)} · "
             f"Σ single-unit KL {num(run.sum_single_kl)} (additivity {run.sum_single_kl / run.candidate_kl:.2f})"
             if run.candidate_kl > 0 else f"{run.candidate} vs {run.baseline}")  # fmt: skip
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("rank", "unit", "params", "KL only this", "KL all but this", "explained", "share", "flips restored"):
        table.add_column(column, justify="left" if column == "unit" else "right")
    for rank, u in enumerate(run.units[:rows], start=1):
        share = u.explained / run.candidate_kl if run.candidate_kl > 0 else 0.0
        table.add_row(str(rank), u.unit, f"{u.params:,}", num(u.kl_only), num(u.kl_without), num(u.explained),
                      f"{share:.1%}", "–" if u.flips_restored is None else str(u.flips_restored))  # fmt: skip
    lines: list[Any] = [table]
    for k in (3, 5, 10):
        if len(run.units) >= k:
            flips = run.flips_share(k)
            shown = "" if flips is None else f", {flips:.0%} of its flips"
            lines.append(f"top {k} units: restoring each explains {run.top_share(k):.0%} of the candidate's KL{shown}")
    for task, f in run.flips.items():
        lines.append(f"{task}: candidate flips {f.c2i + f.i2c} of {f.n} (C→I {f.c2i}, I→C {f.i2c})")
    lines += [f"note: {n}" for n in run.notes]
    lines.append(f"{run.seconds:.0f} s")
    return Group(*lines)


def print_attribution(run: AttributionRun, console: Console | None = None) -> None:
    (console or Console()).print(render_attribution(run))
