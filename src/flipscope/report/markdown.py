"""Markdown for model cards and pull requests: the summary table, the `kld` and MT-Bench tables, and the key
plots as PNG files in a folder beside the Markdown file (linked relatively)."""

from __future__ import annotations

import os
from pathlib import Path

from flipscope.plumbing.atomic import write_atomically
from flipscope.report.collect import ReportInput
from flipscope.report.explorer import flipped_items
from flipscope.report.overview import markdown_overview, overviews
from flipscope.report.plots import all_plots
from flipscope.report.render import png
from flipscope.report.screen_table import screen_cells
from flipscope.report.screen_table import title as screen_title
from flipscope.report.summary_rows import Cell, kld_rows, mtbench_rows, sampled_rows, summary_rows
from flipscope.report.warning_groups import grouped_warnings


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(columns: list[str], rows: list[list[Cell]]) -> list[str]:
    lines = ["| " + " | ".join(_escape(c) for c in columns) + " |"]
    texts = [cell.css == "text" for cell in rows[0]] if rows else [True] * len(columns)
    lines.append("|" + "|".join("---" if text else "---:" for text in texts) + "|")
    lines += ["| " + " | ".join(_escape(c.text) for c in row) + " |" for row in rows]
    return lines


def render_markdown(data: ReportInput, figures: Path, *, relative_to: Path) -> str:
    """The Markdown text; the PNGs are written into ``figures`` and linked relative to ``relative_to``."""
    for stale in figures.glob("*.png") if figures.is_dir() else []:
        stale.unlink()  # this report's own folder: plots of an earlier report that this one may not have
    lines = [f"## flipscope: candidates against `{data.baseline}`", ""]
    columns, rows = summary_rows(data)
    views = overviews(data)
    for view in views:
        lines += ["Flips % of items (Δacc pp) per candidate and task; ≈: within the noise floor's 95% interval.", ""]
        lines += [*markdown_overview(view), ""]
    if rows:
        if views:  # folded on GitHub: the overview comes first
            lines += ["<details><summary>Per-task detail</summary>", ""]
        lines += [*table(columns, [r.cells for r in rows]), ""]
        if views:
            lines += ["</details>", ""]
        flips = sum(len(flipped_items(run)) for run in data.compares)
        lines += [f"{flips} flipped (candidate, item) pairs in all; the HTML report lists them.", ""]
        lines += [f"- {g.line()}" for g in grouped_warnings(data)] + [""]
    for run in data.compares:
        if run.run.sampling is not None:
            lines += [f"### Sampled answers beside their floor ({run.folder})", "", *table(*sampled_rows(run)), ""]
    for kld in data.klds:
        lines += [f"### Token-level KL on {kld.run.settings.corpus} (ctx {kld.run.settings.ctx})", ""]
        lines += [*table(*kld_rows(kld)), ""]
    for mt in data.mtbenches:
        lines += [f"### MT-Bench ({len(mt.run.questions)} questions × 2 turns)", ""]
        lines += [*table(*mtbench_rows(mt)), ""]
    for screened in data.screens:
        lines += [f"### {_escape(screen_title(screened.run))}", "", *table(*screen_cells(screened.run)), ""]
    for plot in all_plots(data):
        path = png(plot, figures / f"{plot.key}.png")
        lines += [f"![{_escape(plot.title)}]({Path(os.path.relpath(path, relative_to)).as_posix()})", ""]
        if plot.caption:
            lines += [f"*{_escape(plot.caption)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(data: ReportInput, path: str | Path) -> Path:
    """``path`` and, beside it, ``<stem>_files/`` with the PNGs."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    text = render_markdown(data, target.parent / f"{target.stem}_files", relative_to=target.parent)
    return write_atomically(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
