"""Plots of `kld`, `mtbench` and `attribute` runs (see ``report.plots`` for what a ``Plot`` is)."""

from __future__ import annotations

import numpy as np

from flipscope.report.collect import AttributionDir, KLDRun, MTBenchRun
from flipscope.report.figure import Plot, PlotKind, Series, percent, rho_label, short


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
        caption=f"{run.run.settings.positions} scored positions; per-position KLs: {run.run.settings.kl_positions}.",
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
                    + rho_label(j.get("spearman_grade_drop_vs_teacher_kl")),
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
                    f"rate vs teacher KL: {rho_label(j.get('spearman_win_rate_vs_teacher_kl'))}",
                    kind=PlotKind.BAR,
                    x_label="candidate",
                    y_label="win rate (%)",
                    series=[
                        Series(
                            "win rate",
                            [short(p["candidate"], base) for p in pairs],
                            [percent(p.get("win_rate")) for p in pairs],
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
        caption=f"Spearman ρ: grade drop vs teacher KL {rho_label(j.get('spearman_grade_drop_vs_teacher_kl'))}; "
        f"win rate vs teacher KL {rho_label(j.get('spearman_win_rate_vs_teacher_kl'))}.",
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
