"""Terminal tables of an MT-Bench run, recomputed from its files: the judge-free distances per category, then per
judge its grades (per turn, per category), its pairwise outcomes against the baseline, and the rank correlation of
its scores with the judge-free distances across candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from flipscope.report.formatting import num, pct


def load_mtbench_run(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    from flipscope.store import mtbench_run as store
    from flipscope.store.mtbench_summary import summarize_mtbench

    run, answers, judgements = store.read(Path(folder))
    return run, summarize_mtbench(run, answers, judgements)


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def render_mtbench(run: Any, summary: dict[str, Any]) -> Group:
    parts: list[Any] = []
    dist = summary["distances"]
    categories = list(dict.fromkeys(k for d in dist.values() for k in d if k != "all"))
    table = Table(
        title=f"MT-Bench · judge-free distances on the baseline's answers ({run.baseline.spec}), "
        f"{len(run.questions)} questions × 2 turns"
    )
    for column in ("candidate", "category", "teacher KL", "ΔNLL/token", "identical", "first div. (median)", "measured"):
        table.add_column(column, justify="left" if column in ("candidate", "category") else "right")
    for cand, per in dist.items():
        for category in ["all", *categories]:
            s = per.get(category)
            if s is None:
                table.add_row(cand if category == "all" else "", category, "–", "–", "–", "–", "0")
                continue
            table.add_row(
                cand if category == "all" else "",
                category,
                num(s["teacher_kl_mean"]),
                num(s["delta_nll_mean"], 3),
                pct(s["identical"]),
                num(s["first_divergence_median"], 0),
                f"{s['measured']} of {s['n']}" if s.get("n") else str(s["measured"]),
                end_section=category == categories[-1] if categories else True,
            )
    parts.append(table)
    for label in run.judges:
        j = summary.get(label)
        if not j:
            continue
        if j["grades"]:
            grades = Table(title=f"single grades (1–10) by {label}")
            for column in ("model", "overall", "turn 1", "turn 2", *categories, "graded", "unparseable"):
                grades.add_column(column, justify="left" if column == "model" else "right")
            for g in j["grades"]:
                grades.add_row(
                    g["model"],
                    _score(g["overall"]),
                    _score(g["turns"].get(1)),
                    _score(g["turns"].get(2)),
                    *[_score(g["categories"].get(c)) for c in categories],
                    str(g["graded"]),
                    str(g["unparseable"]),
                )
            parts.append(grades)
        if j["pairs"]:
            pairs = Table(title=f"pairwise vs the baseline by {label} (both orders; a verdict that flips is a tie)")
            for column in ("candidate", "win", "tie", "loss", "unparseable", "order-flipped", "win rate", *categories):
                pairs.add_column(column, justify="left" if column == "candidate" else "right")
            for p in j["pairs"]:
                total = p["wins"] + p["ties"] + p["losses"]
                pairs.add_row(
                    p["candidate"],
                    str(p["wins"]),
                    str(p["ties"]),
                    str(p["losses"]),
                    str(p["invalid"]),
                    f"{p['inconsistent']}/{total}",
                    pct(p["win_rate"]),
                    *[pct(p["categories"].get(c)) for c in categories],
                )
            parts.append(pairs)
        parts.append(_side_by_side(run, dist, j, categories, label))
        n = j["candidates_correlated"]
        parts.append(
            f"Spearman ρ across {n} candidates, {label}: grade drop vs teacher KL "
            f"{num(j['spearman_grade_drop_vs_teacher_kl'], 2)}, win rate vs teacher KL "
            f"{num(j['spearman_win_rate_vs_teacher_kl'], 2)}"
            + (" (2 candidates: ρ is ±1 by construction)" if n == 2 else "")
        )
    for note in run.notes:
        parts.append(f"note: {note}")
    return Group(*parts)


def _side_by_side(run: Any, dist: dict[str, Any], j: dict[str, Any], categories: list[str], label: str) -> Table:
    """Per category, for each candidate: the judge-free teacher KL beside the judge's grade change and win rate."""
    grades = {g["model"]: g for g in j["grades"]}
    wins = {p["candidate"]: p for p in j["pairs"]}
    base = grades.get(run.baseline.spec)
    table = Table(title=f"per category: teacher KL · grade change vs the baseline · win rate ({label})")
    table.add_column("category")
    for cand in dist:
        table.add_column(f"{cand}\nKL · Δgrade · win", justify="right")
    for category in ["all", *categories]:
        cells = []
        for cand, per in dist.items():
            s = per.get(category)
            kl = num(s["teacher_kl_mean"]) if s else "–"
            g = grades.get(cand)
            if category == "all":
                mine, theirs = (g or {}).get("overall"), (base or {}).get("overall")
                win = wins[cand]["win_rate"] if cand in wins else None
            else:
                mine = (g or {}).get("categories", {}).get(category)
                theirs = (base or {}).get("categories", {}).get(category)
                win = wins[cand]["categories"].get(category) if cand in wins else None
            delta = f"{mine - theirs:+.2f}" if mine is not None and theirs is not None else "–"
            cells.append(f"{kl} · {delta} · {pct(win)}")
        table.add_row(category, *cells)
    return table


def print_mtbench(run: Any, summary: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    console.print(render_mtbench(run, summary))
