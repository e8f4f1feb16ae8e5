"""What each plot of a report shows, as data: one ``Plot`` (``figure``) per figure, rendered by ``render`` both as
an interactive Plotly figure (HTML) and as a PNG (Markdown), so the two never disagree. The compare runs' plots are
here, the other runs' in ``run_plots``; ``all_plots`` gathers a report's."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from flipscope.metrics import TaskSummary
from flipscope.metrics.paired import spearman
from flipscope.report.collect import CompareRun, ReportInput
from flipscope.report.figure import Plot, PlotKind, Series, percent, short
from flipscope.report.run_plots import attribution_plot, kld_by_confidence, kld_distribution, kld_topk, mtbench_plots
from flipscope.report.screen_table import predicted_vs_measured


def _rho_text(rho: float | None, n: int, what: str) -> str:
    return f"Spearman ρ({what}) = {rho:+.2f} over {n} candidates" if rho is not None else f"ρ({what}): n/a (n={n})"


def _tasks(run: CompareRun) -> list[str]:
    names = [t.name for t in run.run.tasks]
    return [*names, "all"] if len(names) > 1 else names


def _cells(run: CompareRun) -> Iterator[tuple[str, str, TaskSummary]]:
    """(candidate, task, summary) for every per-task summary (not the pooled "all")."""
    for cand, per_task in run.run.summary.items():
        for task in (t.name for t in run.run.tasks):
            if task in per_task:
                yield cand, task, per_task[task]


#: Above this many (candidate, task) groups the accuracy chart pools the tasks (the overview has them one by one).
MAX_GROUPS = 12


def accuracy_and_flips(run: CompareRun) -> Plot:
    base = run.run.baseline.spec
    many = len(run.run.tasks) > 1
    cells = list(_cells(run))
    pooled = many and len(cells) > MAX_GROUPS
    if pooled:
        cells = [(c, "all", per["all"]) for c, per in run.run.summary.items() if "all" in per]
    x: list[float | str] = [short(c, base) + (f" · {t}" if many and not pooled else "") for c, t, _ in cells]
    hover = [f"{short(c, base)} · {t}: n = {s.n}" for c, t, s in cells]
    floor = run.run.noise_floor
    floor_summary = None if floor is None else floor.summary.get("all") or next(iter(floor.summary.values()), None)
    hline = None
    if floor_summary is not None and floor_summary.flips is not None:
        hline = (100 * floor_summary.flips, f"noise floor flips {100 * floor_summary.flips:.1f}%")
    return Plot(
        key="accuracy_vs_flips",
        title="Accuracy change and flips per candidate" + (", all tasks pooled" if pooled else ""),
        caption="Δ accuracy (percentage points) beside the flips split by direction (% of items): a small accuracy "
        "change can hide many flips in both directions."
        + (" Every task's items pooled; the overview shows each task." if pooled else ""),
        kind=PlotKind.BAR,
        x_label="candidate",
        y_label="% of items",
        series=[
            Series("Δ accuracy (pp)", x, [percent(s.delta_acc) for _, _, s in cells], hover),
            Series("flips C→I", x, [percent(s.flips_c2i / s.n) if s.n else None for _, _, s in cells], hover),
            Series("flips I→C", x, [percent(s.flips_i2c / s.n) if s.n else None for _, _, s in cells], hover),
        ],
        hline=hline,
    )


def kl_vs_flips(run: CompareRun, *, which: str) -> Plot | None:
    """Flips against a KL (``which``: "choice" or "token"), one point per candidate and task — one colour per
    candidate, its name and the task on hover (no text labels to pile up) — with Spearman's ρ across candidates per
    task: the paper's correlation."""
    base = run.run.baseline.spec
    field_name = {"choice": "choice_kl_mean", "token": "token_kl_mean"}[which]
    by_task: dict[str, list[tuple[str, float, float]]] = {}
    for task in (t.name for t in run.run.tasks):
        for cand, per_task in run.run.summary.items():
            s = per_task.get(task)
            if s is None:
                continue
            kl = getattr(s, field_name)
            if which == "choice" and s.free is not None:
                kl = s.free.teacher_kl_mean  # free-form: the teacher-forced KL is its distance
            if kl is not None and s.flips is not None and kl > 0:
                by_task.setdefault(task, []).append((cand, kl, 100 * s.flips))
    if not by_task:
        return None
    notes = []
    for task, points in by_task.items():
        rho = spearman([p[1] for p in points], [p[2] for p in points])
        notes.append(f"{task}: {_rho_text(rho, len(points), 'KL, flips')}")
    series = []
    for cand in run.run.summary:
        points = [(task, kl, flips) for task, pts in by_task.items() for c, kl, flips in pts if c == cand]
        if points:
            name = short(cand, base)
            series.append(Series(name, [p[1] for p in points], [p[2] for p in points],
                                 [f"{name} · {p[0]}" for p in points]))  # fmt: skip
    label = "answer-token KL" if which == "token" else "choice KL (teacher-forced KL for free-form tasks)"
    return Plot(
        key=f"{which}_kl_vs_flips",
        title=f"Flips against {label}",
        caption="One point per candidate and task (hover for its name). " + "; ".join(notes),
        kind=PlotKind.SCATTER,
        x_label=f"{label}, mean (nats, log scale)",
        y_label="flips (% of items)",
        series=series,
        log_x=True,
    )


def flips_by_margin(run: CompareRun) -> Plot:
    base = run.run.baseline.spec
    task = _tasks(run)[-1]
    series = []
    for cand, per_task in run.run.summary.items():
        s = per_task.get(task)
        if s is None or not s.flips_by_margin:
            continue
        x: list[float | str] = [f"[{b.lo:g}, {b.hi:g}{']' if b.hi >= 1 else ')'}" for b in s.flips_by_margin]
        y = [percent(b.flip_rate) for b in s.flips_by_margin]
        series.append(Series(short(cand, base), x, y, [f"n = {b.n}, flips = {b.flips}" for b in s.flips_by_margin]))
    return Plot(
        key="flips_by_margin",
        title=f"Flip rate by the baseline's top-choice margin ({task})",
        caption="Margin = p(top choice) − p(second choice) under the baseline; flips concentrate where the baseline "
        "was unsure.",
        kind=PlotKind.BAR if len(series) <= MAX_BAR_SERIES else PlotKind.LINE,
        x_label="baseline top-choice margin",
        y_label="flip rate (%)",
        series=series,
    )


#: More candidates than this are drawn as lines over the margin buckets, not as grouped bars.
MAX_BAR_SERIES = 6


def has_data(plot: Plot) -> bool:
    return any(v is not None and math.isfinite(v) for s in plot.series for v in s.y)


def all_plots(data: ReportInput) -> list[Plot]:
    plots: list[Plot] = []
    for run in data.compares:
        plots.append(accuracy_and_flips(run))
        plots += [p for p in (kl_vs_flips(run, which="choice"), kl_vs_flips(run, which="token")) if p is not None]
        if any(s.flips_by_margin for _, _, s in _cells(run)):
            plots.append(flips_by_margin(run))
    for kld in data.klds:
        plots += [kld_distribution(kld), kld_by_confidence(kld), kld_topk(kld)]
    for mt in data.mtbenches:
        plots += mtbench_plots(mt)
    plots += [attribution_plot(a) for a in data.attributions]
    plots += [p for s in data.screens if (p := predicted_vs_measured(s.run, f"screen_{s.folder.name}")) is not None]
    colours = model_colours(data)
    plots = [_coloured(p, colours) for p in plots if has_data(p)]  # (no empty chart for a mute judge)
    keys = [p.key for p in plots]
    for key, group in itertools.groupby(sorted(keys)):
        if len(list(group)) > 1:  # several compare runs: number their plots apart
            plots = [_renamed(p, i) if p.key == key else p for i, p in enumerate(plots)]
    return plots


#: Tableau 10: each model keeps its colour in every plot and table of a report (the baseline first); past these,
#: hues around the circle by the golden angle, so 10–100 candidates still get one colour each.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


def colour(index: int) -> str:
    if index < len(PALETTE):
        return PALETTE[index]
    import colorsys

    hue = (index * 0.618033988749895) % 1.0
    light = (0.42, 0.55, 0.32)[index % 3]
    r, g, b = colorsys.hls_to_rgb(hue, light, 0.65)
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


def model_colours(data: ReportInput) -> dict[str, str]:
    """Short model name → colour, in the order models first appear in the runs."""
    names: list[str] = [short(data.baseline, data.baseline)]
    for run in data.compares:
        names += [short(c, data.baseline) for c in run.run.summary]

    for kld in data.klds:
        names += [short(c, data.baseline) for c in kld.run.summary]
    for mt in data.mtbenches:
        names += [short(c.spec, data.baseline) for c in mt.run.candidates]
    unique = list(dict.fromkeys(names))
    return {name: colour(i) for i, name in enumerate(unique)}


def _coloured(plot: Plot, colours: dict[str, str]) -> Plot:
    """Series named after a model take that model's colour; others (tasks, metrics) keep the default cycle."""
    from dataclasses import replace

    return replace(plot, series=[replace(s, colour=colours.get(s.name)) for s in plot.series])


def _renamed(plot: Plot, index: int) -> Plot:
    from dataclasses import replace

    return replace(plot, key=f"{plot.key}_{index}")
