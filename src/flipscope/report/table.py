"""Terminal rendering of a run: one table per candidate, then the flips-by-margin view and warnings."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from flipscope.metrics import TaskSummary
from flipscope.metrics.degradation import DegradationSummary
from flipscope.metrics.noise_floor import indistinguishable
from flipscope.metrics.sampling import SampledSummary
from flipscope.metrics.token_kl import TokenKL
from flipscope.metrics.windows import WindowMean
from flipscope.report.formatting import num, pct, points, pvalue
from flipscope.store import RunFile

COLUMNS = (
    "task",
    "n",
    "acc_B%",
    "acc_C%",
    "Δacc%",
    "flips%",
    "C→I",
    "I→C",
    "all-flips%",
    "McNemar p",
    "choice KL",
    "token KL",
)


def summary_row(task: str, s: TaskSummary) -> list[str]:
    return [
        task,
        str(s.n),
        pct(s.acc_baseline),
        pct(s.acc_candidate),
        pct(s.delta_acc, signed=True),
        pct(s.flips),
        str(s.flips_c2i),
        str(s.flips_i2c),
        pct(s.all_flips),
        pvalue(s.mcnemar_p),
        num(s.choice_kl_mean),
        num(s.token_kl_mean),
    ]


def candidate_table(
    candidate: str,
    per_task: dict[str, TaskSummary],
    baseline: str,
    *,
    token_kl: str = "",
    floor: dict[str, TaskSummary] | None = None,
) -> Table:
    """``token_kl``: how the token KL column was measured (the pass's ``TokenKL`` label: an estimate, a lower
    bound, top-k approximate); ``floor``: the noise floor per task, shown beside the candidate's flips (with its 95%
    interval)."""
    title = f"{candidate}  vs  {baseline}" + (f"  · token KL {token_kl}" if token_kl else "")
    table = Table(title=title, title_justify="left", header_style="bold")
    sequential = any(s.sequential is not None for s in per_task.values())
    columns = (*COLUMNS, *(FLOOR_COLUMNS if floor else ()), *((SEQUENTIAL_COLUMN,) if sequential else ()))
    for name in columns:
        table.add_column(name, justify="left" if name == "task" else "right")
    for task, s in per_task.items():
        row = summary_row(task, s)
        if floor is not None:
            row += floor_cells(s, floor.get(task))
        if sequential:
            row.append(sequential_text(s))
        table.add_row(*row, style="bold" if task == "all" else None)
    return table


SEQUENTIAL_COLUMN = "sequential"


def sequential_text(s: TaskSummary) -> str:
    """``compare --sequential``'s decision and the items it took: "below · n=120/300" ("–" where not run so)."""
    q = s.sequential
    return "–" if q is None else f"{q.decision} · n={q.n}/{q.available}"


FLOOR_COLUMNS = ("floor flips% [95% CI]", "vs floor")


def floor_cells(s: TaskSummary, floor: TaskSummary | None) -> list[str]:
    """The noise floor's flips with its 95% interval, and whether the candidate is within it."""
    if floor is None:
        return ["–", "–"]
    bounds = floor.sequential.interval if floor.sequential is not None else floor.flips_ci  # sequential: its sequence
    ci = f"[{pct(bounds[0])}, {pct(bounds[1])}]" if bounds else ""
    same = indistinguishable(s, floor)
    return [f"{pct(floor.flips)} {ci}".strip(), "–" if same is None else "≈ floor" if same else "above"]


def degradation_line(d: DegradationSummary | None) -> str:
    """How the candidate's answers degraded against the baseline's: each flag's share B → C with the items that
    gained / lost it (and McNemar's exact p), and the length ratio's geometric mean with its 95% interval."""
    if d is None or not d.n_items:
        return ""
    flags = [("looped", d.looped), ("empty", d.empty), ("found, not committed", d.found_not_committed)]
    parts = [f"{name} B {pct(f.baseline_share)}% C {pct(f.candidate_share)}% (+{f.gained_count}/−{f.lost_count}, "
             f"p {pvalue(f.mcnemar_p)})" for name, f in flags if f is not None]  # fmt: skip
    if d.length is not None:
        ci = d.length.geometric_mean_ci
        band = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        parts.append(f"length C/B ×{d.length.geometric_mean:.2f}{band} (geometric mean, {d.length.n_items} items)")
    return " · degradation: " + " · ".join(parts)


def detail_line(s: TaskSummary) -> str:
    """acc_norm, and the flips per bucket of the baseline's top margin; for free-form tasks the judge-free
    distances instead."""
    if s.free is not None:
        f = s.free
        return (
            f"judge-free, teacher-forced, measured {f.measured} of {f.n or s.n}: KL {num(f.teacher_kl_mean)} · "
            f"ΔNLL/token {num(f.delta_nll_mean)} · first divergence (median token) "
            f"{num(f.first_divergence_median, 0)} · answers, all {f.n or s.n}: identical {pct(f.identical)}% · same "
            f"answer {pct(f.same_answer)}% · strict acc B {pct(f.acc_strict_baseline)}% "
            f"C {pct(f.acc_strict_candidate)}% · no answer B {f.invalid_baseline} C {f.invalid_candidate} · "
            f"hit max tokens B {f.truncated_baseline} C {f.truncated_candidate}{degradation_line(f.degradation)}"
        )
    if s.perplexity_baseline is not None:  # a greedy-scored task (LAMBADA): one continuation, no margins
        return (
            f"acc = greedy match (lm-eval's is_greedy) · perplexity B {num(s.perplexity_baseline, 2)} "
            f"C {num(s.perplexity_candidate, 2)} · choice KL, all-flips, margins: n/a (one continuation per item)"
        )
    parts = [f"[{b.lo:g},{b.hi:g}{']' if b.hi == 1 else ')'} {b.flips}/{b.n}" for b in s.flips_by_margin]
    norm = (
        "acc_norm n/a"  # no option lengths (lm-eval reports acc only, or a multiple-input task)
        if s.acc_norm_baseline is None and s.acc_norm_candidate is None
        else f"acc_norm B {pct(s.acc_norm_baseline)}% C {pct(s.acc_norm_candidate)}%"
    )
    return f"{norm} · flips by baseline top-margin: " + "  ".join(parts)


def token_kl_label(stored: object, *, tail_samples: int) -> str:
    """run.json's token-KL label read as the pass's is (``TokenKL.read``): "exact", which versions before the labels
    wrote for the sampled estimate, is the estimate, or the bound where the run stored no tail samples."""
    if not stored:
        return ""
    try:
        kind = TokenKL.read(str(stored), tail_samples=tail_samples)
    except ValueError:  # a label this version does not know: shown as written
        return str(stored)
    return "" if kind is None else kind.value


def sampled_line(s: SampledSummary) -> str:
    """pass@1 of each side, the candidate's flips per draw beside the sampling floor, and their difference."""
    pass_at = ", ".join(f"pass@{k} {s.baseline_pass_at[k]:.1%} → {v:.1%}" for k, v in s.candidate_pass_at.items()
                        if k > 1)  # fmt: skip
    return (
        f"pass@1 {s.baseline_pass1:.1%} → {s.candidate_pass1:.1%}{'; ' + pass_at if pass_at else ''}; flips per "
        f"draw {points(s.flips.mean, s.flips.err)} % vs sampling floor {points(s.floor.mean, s.floor.err)} % "
        f"(excess {points(s.excess.mean, s.excess.err, signed=True)} points; {s.items} items × {s.draws} draws "
        f"at T={s.temperature:g}; ± SE over items)"
    )


def render_run(run: RunFile) -> Group:
    parts: list[Table | Text] = []
    settings = run.settings
    own = {t.name: t.meta["fewshot"] for t in run.tasks if "fewshot" in t.meta}  # free-form tasks' own counts
    shots = [f"{settings.fewshot}-shot"] if len(own) < len(run.tasks) else []
    shots += [f"{name} {k}-shot" for name, k in own.items()]
    header = (
        f"baseline {run.baseline.spec} · format {settings.format} · {' · '.join(shots)} · "
        f"limit {settings.limit if settings.limit else 'all'} · seed {settings.seed}"
    )
    parts.append(Text(header, style="dim"))
    kinds = {c.spec: token_kl_label(c.details.get("token_kl"), tail_samples=settings.tail_samples)
             for c in run.candidates}  # fmt: skip
    floor = run.noise_floor.summary if run.noise_floor else None
    if run.noise_floor is not None:
        parts.append(
            candidate_table(f"noise floor ({run.noise_floor.setup})", run.noise_floor.summary, run.baseline.spec)
        )
    for candidate, per_task in run.summary.items():
        kind = kinds.get(candidate, "")
        parts.append(candidate_table(candidate, per_task, run.baseline.spec, token_kl=kind, floor=floor))
        for task, s in per_task.items():
            parts.append(Text(f"  {task}: {detail_line(s)}", style="dim"))
            parts.extend(Text(f"  ! {task}: {w}", style="yellow") for w in s.warnings)
        sampled = run.sampling.summary.get(candidate, {}) if run.sampling is not None else {}
        for task, fields in sampled.items():
            parts.append(Text(f"  {task} sampled: {sampled_line(SampledSummary.from_fields(fields))}"))
    if run.sampling is not None and not run.summary:
        for task, floor_fields in run.sampling.floor.items():
            got = WindowMean(**floor_fields)
            parts.append(Text(f"  {task} sampling floor: {got.mean:.1%} ± {got.err:.1%} of items flip per draw"))
    for note in run.notes:
        parts.append(Text(f"note: {note}", style="dim"))
    return Group(*parts)


def print_run(run: RunFile, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)  # files and pipes: never squeeze the table
    console.print(render_run(run))
