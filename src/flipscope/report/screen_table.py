"""Views of a `flipscope screen` run (``report.screen_load`` reads it): the terminal table, the rows of the HTML
and Markdown table, and the plot of predicted against measured flips."""

from __future__ import annotations

from typing import Any

from flipscope.metrics.paired import spearman
from flipscope.report.figure import Plot, PlotKind, Series, percent, rho_label, short
from flipscope.report.formatting import num, pct
from flipscope.report.summary_rows import Cell
from flipscope.store.screen_run import Estimate, ScreenRunFile


def _interval(e: Estimate | None) -> str:
    return "n/a" if e is None else f"{pct(e[0])} [{pct(e[1])}, {pct(e[2])}]"


def columns(run: ScreenRunFile) -> list[str]:
    kind = f" ({run.corpus_kl_kind})" if run.corpus_kl_kind and run.corpus_kl_kind != "exact" else ""
    keys = _keys(run)
    return ["rank", "candidate", "bits/weight", f"corpus KL{kind} ± se",
            *(f"predicted flips % {k} [{run.calibration.level:.0%} PI]" for k in keys),
            f"sample flips % {run.pooled} [95% CI]", "Pareto", "run fully?"]  # fmt: skip


def _keys(run: ScreenRunFile) -> list[str]:
    return [*run.tasks, "all"] if len(run.tasks) > 1 else list(run.tasks)


def rows(run: ScreenRunFile) -> list[list[tuple[str, Any]]]:
    """Per candidate in rank order: (text, sort key) cells, the columns of ``columns``."""
    out = []
    for c in sorted(run.candidates, key=lambda c: c.rank):
        kl = "n/a" if c.corpus_kl is None else f"{num(c.corpus_kl)} ± {num(c.corpus_kl_se)}"
        predicted = [c.predicted_flips.get(k) for k in _keys(run)]
        sample = c.sample_flips.get(run.pooled)
        out.append([
            (str(c.rank), c.rank), (short(c.spec, run.baseline), c.spec),
            ("n/a" if c.bits is None else f"{c.bits:.2f}", c.bits), (kl, c.corpus_kl),
            *((_interval(p), p[0] if p else None) for p in predicted),
            (_interval(sample), sample[0] if sample else None),
            ("yes" if c.pareto else "", int(c.pareto)), (c.run_fully, c.run_fully),
        ])  # fmt: skip
    return out


def screen_cells(run: ScreenRunFile) -> tuple[list[str], list[list[Any]]]:
    """The HTML and Markdown table: ``columns`` and rows of ``summary_rows.Cell``."""
    text = {1, len(columns(run)) - 2, len(columns(run)) - 1}  # candidate, Pareto, run fully?
    return columns(run), [[Cell(t, k, "text" if i in text else "") for i, (t, k) in enumerate(r)] for r in rows(run)]


def title(run: ScreenRunFile) -> str:
    cal = run.calibration
    source = f"calibrated on {cal.pairs} pairs from " + ("--calibrate runs" if cal.source == "runs" else "the sample")
    return f"screen · baseline {run.baseline} · {len(run.candidates)} candidates · {', '.join(run.tasks)} · {source}"


def render_screen_run(run: ScreenRunFile) -> Any:
    from rich.console import Group
    from rich.table import Table

    table = Table(title=title(run), title_justify="left", header_style="bold")
    for name in columns(run):
        table.add_column(name, justify="left" if name in ("candidate", "run fully?") else "right")
    for row in rows(run):
        table.add_row(*(text for text, _ in row))
    front = [short(c.spec, run.baseline) for c in sorted(run.candidates, key=lambda c: c.rank) if c.pareto]
    parts: list[Any] = [table, f"Pareto set (bits/weight vs {run.pareto_basis}): {', '.join(front) or 'none'}"]
    if run.then_compare:
        parts.append(f"run fully ({run.full_dir}/): {', '.join(short(s, run.baseline) for s in run.then_compare)}")
    parts += [f"note: {n}" for n in run.notes]
    return Group(*parts)


def print_screen_run(run: ScreenRunFile, console: Any = None) -> None:
    from rich.console import Console

    (console or Console()).print(render_screen_run(run))


def screen_json(run: ScreenRunFile) -> dict[str, Any]:
    """The documented ``--json`` shape: ``{"candidates": [{"spec", "corpus_kl", "predicted_flips": {task or "all":
    [point, low, high] or null}, …}]}`` plus what else the table shows."""
    return {
        "baseline": run.baseline,
        "tasks": run.tasks,
        "candidates": [
            {
                "spec": c.spec,
                "rank": c.rank,
                "bits": c.bits,
                "corpus_kl": c.corpus_kl,
                "corpus_kl_se": c.corpus_kl_se,
                "predicted_flips": {k: list(v) if v else None for k, v in c.predicted_flips.items()},
                "sample_flips": {k: list(v) if v else None for k, v in c.sample_flips.items()},
                "choice_kl": c.choice_kl,
                "pareto": c.pareto,
                "run_fully": c.run_fully,
                "measured_flips": {k: list(v) for k, v in c.measured_flips.items()},
            }
            for c in sorted(run.candidates, key=lambda c: c.rank)
        ],
        "calibration": run.calibration.model_dump(),
        "ranked_by": run.ranked_by,
        "pareto_basis": run.pareto_basis,
        "then_compare": run.then_compare,
        "notes": run.notes,
    }


def predicted_vs_measured(run: ScreenRunFile, key: str = "screen") -> Plot | None:
    """One point per (candidate, task) that has both a prediction and a full-run measurement; None where none has."""
    points = [(short(c.spec, run.baseline) + f" · {t}", p, c.measured_flips[t])
              for c in run.candidates for t, p in c.predicted_flips.items()
              if p is not None and t in c.measured_flips]  # fmt: skip
    if not points:
        return None
    rho = spearman([p[1][0] for p in points], [p[2][0] for p in points])
    return Plot(
        key=f"{key}_predicted_vs_measured",
        section="screen",
        title="Predicted against measured flips",
        caption=f"Predicted by the screen (x, its calibration's point) against measured on every item (y); "
        f"Spearman ρ {rho_label(rho)} over {len(points)} (candidate, task) points.",
        kind=PlotKind.SCATTER,
        x_label="predicted flips (% of items)",
        y_label="measured flips (% of items)",
        series=[
            Series(
                "candidates",
                [percent(p[1][0]) or 0.0 for p in points],
                [percent(p[2][0]) for p in points],
                [p[0] for p in points],
            )
        ],
    )
