"""What each plot of a report shows, as data: one ``Plot`` per figure, rendered by ``render`` both as an
interactive Plotly figure (HTML) and as a PNG (Markdown), so the two never disagree."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from flipscope.metrics import TaskSummary
from flipscope.metrics.paired import spearman
from flipscope.report.collect import AttributionDir, CompareRun, KLDRun, MTBenchRun, ReportInput


class PlotKind(StrEnum):
    BAR = "bar"  # grouped bars: series share the x categories
    SCATTER = "scatter"  # labelled points
    LINE = "line"


@dataclass(frozen=True)
class Series:
    name: str
    x: list[float | str]
    y: list[float | None]
    text: list[str] = field(default_factory=list)  # per point: a label (scatter) or hover text
    colour: str | None = None  # one colour per model across the whole report (``all_plots``)


@dataclass(frozen=True)
class Plot:
    key: str  # file name stem of its PNG, element id in the HTML
    title: str
    caption: str
    kind: PlotKind
    x_label: str
    y_label: str
    series: list[Series]
    log_x: bool = False
    hline: tuple[float, str] | None = None  # a reference level and its label (the noise floor)
    section: str = "compare"  # the report section it belongs to: compare, kld, mtbench


def short(spec: str, baseline: str) -> str:
    """A candidate's name without the baseline's spec it extends ("+rtn:w8")."""
    return spec[len(baseline) :] if spec.startswith(baseline + "+") else spec


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


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


def accuracy_and_flips(run: CompareRun) -> Plot:
    base = run.run.baseline.spec
    many = len(run.run.tasks) > 1
    cells = list(_cells(run))
    x: list[float | str] = [short(c, base) + (f" · {t}" if many else "") for c, t, _ in cells]
    floor = run.run.noise_floor
    floor_summary = None if floor is None else floor.summary.get("all") or next(iter(floor.summary.values()), None)
    hline = None
    if floor_summary is not None and floor_summary.flips is not None:
        hline = (100 * floor_summary.flips, f"noise floor flips {100 * floor_summary.flips:.1f}%")
    return Plot(
        key="accuracy_vs_flips",
        title="Accuracy change and flips per candidate",
        caption="Δ accuracy (percentage points) beside the flips split by direction (% of items): a small accuracy "
        "change can hide many flips in both directions.",
        kind=PlotKind.BAR,
        x_label="candidate",
        y_label="% of items",
        series=[
            Series("Δ accuracy (pp)", x, [_pct(s.delta_acc) for _, _, s in cells]),
            Series("flips C→I", x, [_pct(s.flips_c2i / s.n) if s.n else None for _, _, s in cells]),
            Series("flips I→C", x, [_pct(s.flips_i2c / s.n) if s.n else None for _, _, s in cells]),
        ],
        hline=hline,
    )


def kl_vs_flips(run: CompareRun, *, which: str) -> Plot | None:
    """Flips against a KL (``which``: "choice" or "token"), one point per candidate and task, with Spearman's ρ
    across candidates per task — the paper's correlation."""
    base = run.run.baseline.spec
    field_name = {"choice": "choice_kl_mean", "token": "token_kl_mean"}[which]
    series, notes = [], []
    for task in (t.name for t in run.run.tasks):
        points = []
        for cand, per_task in run.run.summary.items():
            s = per_task.get(task)
            if s is None:
                continue
            kl = getattr(s, field_name)
            if which == "choice" and s.free is not None:
                kl = s.free.teacher_kl_mean  # free-form: the teacher-forced KL is its distance
            if kl is not None and s.flips is not None and kl > 0:
                points.append((short(cand, base), kl, 100 * s.flips))
        if not points:
            continue
        rho = spearman([p[1] for p in points], [p[2] for p in points])
        notes.append(f"{task}: {_rho_text(rho, len(points), 'KL, flips')}")
        series.append(Series(task, [p[1] for p in points], [p[2] for p in points], [p[0] for p in points]))
    if not series:
        return None
    label = "answer-token KL" if which == "token" else "choice KL (teacher-forced KL for free-form tasks)"
    return Plot(
        key=f"{which}_kl_vs_flips",
        title=f"Flips against {label}",
        caption="; ".join(notes),
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
        y = [_pct(b.flip_rate) for b in s.flips_by_margin]
        series.append(Series(short(cand, base), x, y, [f"n = {b.n}, flips = {b.flips}" for b in s.flips_by_margin]))
    return Plot(
        key="flips_by_margin",
        title=f"Flip rate by the baseline's top-choice margin ({task})",
        caption="Margin = p(top choice) − p(second choice) under the baseline; flips concentrate where the baseline "
        "was unsure.",
        kind=PlotKind.BAR,
        x_label="baseline top-choice margin",
        y_label="flip rate (%)",
        series=series,
    )


def kld_distribution(run: KLDRun, points: int = 200) -> Plot:
    """The CDF of per-position KL, one line per candidate (``points`` quantiles each)."""
    from flipscope.store.kld_run import finite_positions

    series = []
    base = str(run.run.baseline["spec"])
    for label, part in run.positions.groupby("candidate", sort=False):
        kept, _ = finite_positions({c: part[c].to_numpy() for c in part.columns if c != "candidate"})
        kl = np.sort(np.maximum(kept["kl"].astype(np.float64), 1e-12))  # [n]; log axis: zeros shown at 1e-12
        q = np.linspace(0, 1, min(points, kl.size))
        series.append(Series(short(str(label), base), [float(v) for v in np.quantile(kl, q)], [float(v) for v in q]))
    return Plot(
        key=f"kld_cdf_{run.folder.name}",
        section="kld",
        title=f"Per-token KL(baseline‖candidate) on {run.run.settings.corpus} (CDF)",
        caption=f"{run.run.settings.positions} scored positions; KL kind: {run.run.settings.kl_forward}.",
        kind=PlotKind.LINE,
        x_label="KL per position (nats, log scale)",
        y_label="share of positions ≤ x",
        series=series,
        log_x=True,
    )


def kld_by_confidence(run: KLDRun) -> Plot:
    base = str(run.run.baseline["spec"])
    series = []
    for label, s in run.run.summary.items():
        buckets = [b for b in s.kl_by_confidence if b.n]
        series.append(
            Series(
                short(label, base),
                [(b.low + b.high) / 2 for b in buckets],
                [b.kl_mean for b in buckets],
                [f"n = {b.n}" for b in buckets],
            )
        )
    return Plot(
        key=f"kld_confidence_{run.folder.name}",
        section="kld",
        title="Mean KL by the baseline's confidence in its top token",
        caption="Bucketed by the baseline's top-token probability (bucket centres).",
        kind=PlotKind.LINE,
        x_label="baseline top-token probability",
        y_label="mean KL (nats)",
        series=series,
    )


def kld_topk(run: KLDRun) -> Plot:
    base = str(run.run.baseline["spec"])
    series = [
        Series(short(label, base), [float(k) for k in s.topk_agreement], [100 * v for v in s.topk_agreement.values()])
        for label, s in run.run.summary.items()
    ]
    return Plot(
        key=f"kld_topk_{run.folder.name}",
        section="kld",
        title="Top-k agreement: the two models rank the same k tokens first",
        caption="Share of positions whose top-k tokens agree in order, k = 1…10.",
        kind=PlotKind.LINE,
        x_label="k",
        y_label="% of positions",
        series=series,
    )


def mtbench_plots(run: MTBenchRun) -> list[Plot]:
    base = run.run.baseline.spec
    dist = run.summary["distances"]
    categories = list(dict.fromkeys(k for d in dist.values() for k in d if k != "all"))
    out = [
        Plot(
            key=f"mtbench_teacher_kl_{run.folder.name}",
            section="mtbench",
            title="MT-Bench: teacher-forced KL on the baseline's answers, per category",
            caption="Each candidate scores the baseline's answers in the baseline's conversations (judge-free).",
            kind=PlotKind.BAR,
            x_label="category",
            y_label="mean teacher-forced KL (nats)",
            series=[
                Series(
                    short(c, base), list(categories), [(per.get(k) or {}).get("teacher_kl_mean") for k in categories]
                )
                for c, per in dist.items()
            ],
        )
    ]
    for judge in run.run.judges:
        j = run.summary.get(judge) or {}
        grades = [g for g in j.get("grades", []) if g.get("categories")]
        if grades:
            out.append(
                Plot(
                    key=f"mtbench_grades_{run.folder.name}_{len(out)}",
                    section="mtbench",
                    title=f"MT-Bench single grades by {judge}, per category",
                    caption="Spearman ρ of grade drop vs teacher KL: "
                    + _rho(j.get("spearman_grade_drop_vs_teacher_kl")),
                    kind=PlotKind.BAR,
                    x_label="category",
                    y_label="grade (1–10)",
                    series=[
                        Series(short(g["model"], base), list(categories), [g["categories"].get(k) for k in categories])
                        for g in grades
                    ],
                )
            )
        pairs = j.get("pairs", [])
        if pairs:
            out.append(
                Plot(
                    key=f"mtbench_wins_{run.folder.name}_{len(out)}",
                    section="mtbench",
                    title=f"MT-Bench pairwise win rate against the baseline, judged by {judge}",
                    caption=f"Both orders judged; a verdict that changes with the order is a tie. Spearman ρ of win "
                    f"rate vs teacher KL: {_rho(j.get('spearman_win_rate_vs_teacher_kl'))}",
                    kind=PlotKind.BAR,
                    x_label="candidate",
                    y_label="win rate (%)",
                    series=[
                        Series(
                            "win rate",
                            [short(p["candidate"], base) for p in pairs],
                            [_pct(p.get("win_rate")) for p in pairs],
                        )
                    ],
                )
            )
        out.append(_judge_vs_distance(run, judge))
    return out


def _judge_vs_distance(run: MTBenchRun, judge: str) -> Plot:
    """Per candidate: its teacher-forced KL against the judge's grade drop and its win rate, with Spearman's ρ."""
    base = run.run.baseline.spec
    j = run.summary.get(judge) or {}
    kl = {c: (per.get("all") or {}).get("teacher_kl_mean") for c, per in run.summary["distances"].items()}
    grades = {g["model"]: g.get("overall") for g in j.get("grades", [])}
    wins = {p["candidate"]: p.get("win_rate") for p in j.get("pairs", [])}
    series = []
    for name, values in (("grade drop (baseline − candidate)", None), ("win rate against the baseline", wins)):
        points = []
        for cand, x in kl.items():
            if values is None:
                b, c = grades.get(base), grades.get(cand)
                y = None if b is None or c is None else b - c
            else:
                y = values.get(cand)
            if x is not None and y is not None and x > 0:
                points.append((short(cand, base), x, y))
        series.append(Series(name, [p[1] for p in points], [p[2] for p in points], [p[0] for p in points]))
    return Plot(
        key=f"mtbench_judge_vs_kl_{run.folder.name}_{run.run.judges.index(judge)}",
        section="mtbench",
        title=f"MT-Bench: judge ({judge}) against the judge-free distance",
        caption=f"Spearman ρ: grade drop vs teacher KL {_rho(j.get('spearman_grade_drop_vs_teacher_kl'))}; "
        f"win rate vs teacher KL {_rho(j.get('spearman_win_rate_vs_teacher_kl'))}.",
        kind=PlotKind.SCATTER,
        x_label="teacher-forced KL, mean (nats, log scale)",
        y_label="grade drop (points) · win rate (0–1)",
        series=series,
        log_x=True,
    )


def attribution_plot(attr: AttributionDir) -> Plot:
    """Per unit, in model order: the KL with only this unit compressed, and the KL that restoring it removes."""
    run = attr.run
    order = sorted(run.units, key=lambda u: _unit_order(u.unit))
    x: list[float | str] = [u.unit for u in order]
    return Plot(
        key=f"attribution_{attr.folder.name}",
        section="attribute",
        title=f"Where {short(run.candidate, run.baseline)}'s corpus KL comes from (by {run.by})",
        caption=f"Candidate KL {run.candidate_kl:.4g}; Σ single-unit KL {run.sum_single_kl:.4g} (additivity "
        f"{run.sum_single_kl / run.candidate_kl if run.candidate_kl else float('nan'):.2f}).",
        kind=PlotKind.BAR,
        x_label=run.by,
        y_label="corpus KL (nats)",
        series=[
            Series("only this unit compressed", x, [u.kl_only for u in order]),
            Series("removed by restoring this unit", x, [u.explained for u in order]),
        ],
    )


def _unit_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if name.startswith("block ") and digits else 10**6, name)


def _rho(value: float | None) -> str:
    return "n/a (fewer than 2 candidates with numbers)" if value is None else f"{value:+.2f}"


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
    colours = model_colours(data)
    plots = [_coloured(p, colours) for p in plots if has_data(p)]  # (no empty chart for a mute judge)
    keys = [p.key for p in plots]
    for key, group in itertools.groupby(sorted(keys)):
        if len(list(group)) > 1:  # several compare runs: number their plots apart
            plots = [_renamed(p, i) if p.key == key else p for i, p in enumerate(plots)]
    return plots


#: Tableau 10: each model keeps its colour in every plot of a report (the baseline first).
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


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
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(unique)}


def _coloured(plot: Plot, colours: dict[str, str]) -> Plot:
    """Series named after a model take that model's colour; others (tasks, metrics) keep the default cycle."""
    from dataclasses import replace

    return replace(plot, series=[replace(s, colour=colours.get(s.name)) for s in plot.series])


def _renamed(plot: Plot, index: int) -> Plot:
    from dataclasses import replace

    return replace(plot, key=f"{plot.key}_{index}")
