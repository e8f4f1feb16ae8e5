"""A ``Plot`` drawn two ways: a Plotly figure (JSON, for the HTML report's embedded plotly.js) and a PNG through
matplotlib (for Markdown). Both read the same series, so the page and the PNG show the same numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flipscope.plumbing.atomic import write_atomically
from flipscope.report.figure import Plot, PlotKind

#: Up to this many series the legend is a row under the plot; more: a scrolling column beside it.
LEGEND_ROW = 8
#: More bar groups than this: no tick labels (names on hover), never a slanted wall of text.
MAX_TICKS = 30
#: Up to this many points a PNG's scatter names each point (it has no hover); more: the legend's colours only.
MAX_PNG_LABELS = 12


def plotly_figure(plot: Plot) -> dict[str, Any]:
    """The figure as Plotly's JSON ({"data": [...], "layout": {...}})."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure()
    for s in plot.series:
        colour = {"color": s.colour} if s.colour else {}
        if plot.kind is PlotKind.BAR:
            fig.add_trace(go.Bar(name=s.name, x=s.x, y=s.y, hovertext=s.text or None, marker=colour))
        elif plot.kind is PlotKind.SCATTER:
            fig.add_trace(
                go.Scatter(
                    name=s.name, x=s.x, y=s.y, hovertext=s.text or None, mode="markers", marker={"size": 10, **colour}
                )
            )  # names on hover: labels would pile up; fmt: skip
        else:
            fig.add_trace(go.Scatter(name=s.name, x=s.x, y=s.y, hovertext=s.text or None, mode="lines+markers",
                                     marker=colour, line=colour))  # fmt: skip
    if plot.hline is not None:
        fig.add_hline(y=plot.hline[0], line_dash="dash", line_color="grey", annotation_text=plot.hline[1])
    fig.update_layout(
        title={"text": plot.title},
        xaxis_title=plot.x_label,
        yaxis_title=plot.y_label,
        barmode="group",
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.25} if len(plot.series) <= LEGEND_ROW else {"orientation": "v"},
        height=420,
    )
    if plot.kind is PlotKind.BAR and len({x for s in plot.series for x in s.x}) > MAX_TICKS:
        fig.update_xaxes(showticklabels=False, title_text=f"{plot.x_label} (hover a bar for its name)")
    if plot.log_x:
        fig.update_xaxes(type="log")
    figure: dict[str, Any] = json.loads(pio.to_json(fig, validate=False))
    return figure


def png(plot: Plot, path: Path) -> Path:
    """Draw ``plot`` into ``path`` (PNG, 1000 × 520 px)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=100)
    try:
        if plot.kind is PlotKind.BAR:
            _bars(ax, plot)
        else:
            for s in plot.series:
                xs = [float(v) for v in s.x]
                ys = [float("nan") if v is None else v for v in s.y]
                if plot.kind is PlotKind.SCATTER:
                    ax.scatter(xs, ys, label=s.name, s=40, color=s.colour)
                    labelled = sum(len(t.x) for t in plot.series) <= MAX_PNG_LABELS
                    for x, y, text in zip(xs, ys, s.text if labelled else [], strict=False):
                        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
                else:
                    ax.plot(xs, ys, marker=".", label=s.name, color=s.colour)
        if plot.hline is not None:
            ax.axhline(plot.hline[0], linestyle="--", color="grey", label=plot.hline[1])
        if plot.log_x:
            ax.set_xscale("log")
        ax.set_title(plot.title, fontsize=11)
        ax.set_xlabel(plot.x_label)
        ax.set_ylabel(plot.y_label)
        ax.grid(alpha=0.3)
        if len(plot.series) > 1 or plot.hline is not None:
            ax.legend(fontsize=7 if len(plot.series) > LEGEND_ROW else 8, ncol=1 + len(plot.series) // 16)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path


def _bars(ax: Any, plot: Plot) -> None:
    categories = list(dict.fromkeys(x for s in plot.series for x in s.x))
    width = 0.8 / max(len(plot.series), 1)
    for i, s in enumerate(plot.series):
        values = dict(zip(s.x, s.y, strict=True))
        ys = [values.get(c) for c in categories]
        xs = [j + (i - (len(plot.series) - 1) / 2) * width for j in range(len(categories))]
        ax.bar(xs, [float("nan") if v is None else v for v in ys], width=width, label=s.name, color=s.colour)
    ax.set_xticks(range(len(categories)))
    if len(categories) > MAX_TICKS:
        ax.set_xticklabels([])  # too many to read: the legend and the HTML's hover name them
        return
    ax.set_xticklabels([str(c) for c in categories], rotation=20 if len(categories) > 4 else 0, ha="right")
