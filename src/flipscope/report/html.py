"""The self-contained HTML report: one file, built from a Jinja2 template, with plotly.js, the page's script and
its styles embedded (it opens offline, no CDN), the figures and the flips explorer's rows as JSON in the page."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from flipscope.plumbing.version import flipscope_version
from flipscope.report.collect import ReportInput
from flipscope.report.explorer import FlipRow, flipped_items
from flipscope.report.figure import Plot, short
from flipscope.report.overview import overviews
from flipscope.report.plots import all_plots, model_colours
from flipscope.report.render import plotly_figure
from flipscope.report.screen_table import screen_cells
from flipscope.report.screen_table import title as screen_title
from flipscope.report.summary_rows import (
    Cell,
    attribution_rows,
    kld_rows,
    mtbench_rows,
    sampled_rows,
    summary_rows,
)
from flipscope.report.warning_groups import grouped_warnings


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    plots: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)


def _asset(name: str) -> str:
    return resources.files("flipscope.report").joinpath("templates", name).read_text(encoding="utf-8")


def _inline(code: str) -> Any:
    """Script or style text to place inside its element as it is (never HTML-escaped), with any closing tag
    sequence broken so it cannot end the element early."""
    from markupsafe import Markup

    return Markup(code.replace("</script", "<\\/script").replace("</style", "<\\/style"))


def plotly_js() -> str:
    """plotly.js as shipped inside the plotly package (no download, no CDN)."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text(encoding="utf-8")


def _plot_entry(plot: Plot) -> dict[str, Any]:
    return {"key": plot.key, "caption": plot.caption, "figure": plotly_figure(plot)}


def _explorer(rows: list[FlipRow], baseline: str) -> dict[str, Any]:
    entries = [asdict(r) | {"candidate_short": short(r.candidate, baseline)} for r in rows]
    return {
        "rows": entries,
        "tasks": sorted({r.task for r in rows}),
        "candidates": list(dict.fromkeys(r.candidate for r in rows)),
    }


def _table(caption: str, columns: list[str], rows: list[list[Cell]]) -> dict[str, Any]:
    return {"caption": caption, "columns": columns, "rows": rows}


def _sections(data: ReportInput, plots: list[Plot]) -> list[Section]:
    by_section: dict[str, list[Plot]] = {}
    for plot in plots:
        by_section.setdefault(plot.section, []).append(plot)
    sections = []
    if by_section.get("compare"):
        sections.append(Section("plots", "Accuracy, flips and KL", [_plot_entry(p) for p in by_section["compare"]]))
    sampled = [_table(f"{r.folder}: sampled answers", *sampled_rows(r)) for r in data.compares if r.run.sampling]
    if sampled:
        sections.append(Section("sampled", "Sampled answers beside their floor", [], sampled))
    if data.klds:
        tables = [_table(f"{k.folder}: {k.run.settings.corpus}, ctx {k.run.settings.ctx}", *kld_rows(k))
                  for k in data.klds]  # fmt: skip
        sections.append(Section("kld", "Token-level KL on text (kld)",
                                [_plot_entry(p) for p in by_section.get("kld", [])], tables))  # fmt: skip
    if data.mtbenches:
        tables = [_table(f"{m.folder}: {len(m.run.questions)} questions × 2 turns", *mtbench_rows(m))
                  for m in data.mtbenches]  # fmt: skip
        sections.append(Section("mtbench", "MT-Bench", [_plot_entry(p) for p in by_section.get("mtbench", [])], tables))
    if data.attributions:
        tables = [
            _table(f"{a.folder}: {a.run.candidate}, by {a.run.by}", *attribution_rows(a)) for a in data.attributions
        ]
        sections.append(Section("attribute", "Attribution", [_plot_entry(p) for p in by_section.get("attribute", [])],
                                tables))  # fmt: skip
    if data.screens:
        tables = [_table(f"{s.folder}: {screen_title(s.run)}", *screen_cells(s.run)) for s in data.screens]
        sections.append(Section("screen", "Screen", [_plot_entry(p) for p in by_section.get("screen", [])], tables))
    return sections


def _runs(data: ReportInput) -> list[dict[str, str]]:
    out = [{"folder": str(r.folder), "kind": "compare", "detail": ", ".join(t.name for t in r.run.tasks)}
           for r in data.compares]  # fmt: skip
    out += [{"folder": str(r.folder), "kind": "kld", "detail": str(r.run.settings.corpus)} for r in data.klds]
    out += [{"folder": str(r.folder), "kind": "mtbench", "detail": ""} for r in data.mtbenches]
    out += [{"folder": str(r.folder), "kind": "attribute", "detail": r.run.candidate} for r in data.attributions]
    out += [{"folder": str(r.folder), "kind": "screen", "detail": ", ".join(r.run.tasks)} for r in data.screens]
    return out


def render_html(data: ReportInput) -> str:
    from jinja2 import Environment, FunctionLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FunctionLoader(lambda name: _asset(name)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    flips = [row for run in data.compares for row in flipped_items(run)]
    columns, rows = summary_rows(data)
    return env.get_template("report.html.j2").render(
        version=flipscope_version(),
        baseline=data.baseline,
        runs=_runs(data),
        written=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        summary_columns=columns,
        summary_rows=rows,
        overviews=overviews(data),
        colours=model_colours(data),
        warnings=grouped_warnings(data),
        sections=_sections(data, all_plots(data)),
        explorer=_explorer(flips, data.baseline) if data.compares else None,
        css=_inline(_asset("report.css")),
        script=_inline(_asset("report.js")),
        plotly_js=_inline(plotly_js()),
    )


def write_html(data: ReportInput, path: str | Path) -> Path:
    """Write the report to ``path`` (atomically: a temporary name, then a rename)."""
    from flipscope.plumbing.atomic import write_atomically

    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    page = render_html(data)
    return write_atomically(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
