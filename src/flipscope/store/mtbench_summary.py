"""An MT-Bench run's summaries, recomputed from its stored files alone (``answers.parquet``, ``judgements.parquet``):
the judge-free distances per candidate and category, and per judge its grades, pairwise outcomes and the rank
correlation across candidates of its scores with the judge-free distances."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flipscope.judge import summarize_grades, summarize_pairs
from flipscope.metrics.paired import spearman
from flipscope.metrics.records import Pair
from flipscope.metrics.summary import FreeSummary, free_summary
from flipscope.store import mtbench_run


def distances(answers: Any, run: mtbench_run.MTBenchRunFile) -> dict[str, dict[str, FreeSummary | None]]:
    """Per candidate, per category (and "all"): the judge-free distances on the baseline's answers."""
    base = mtbench_run.scores_from(answers, run.baseline.spec)
    out: dict[str, dict[str, FreeSummary | None]] = {}
    for cand in run.candidates:
        pairs = [Pair(b, c) for b, c in zip(base, mtbench_run.scores_from(answers, cand.spec), strict=True)]
        categories = list(dict.fromkeys(p.baseline.subject for p in pairs))
        out[cand.spec] = {"all": free_summary(pairs)} | {
            c: free_summary([p for p in pairs if p.baseline.subject == c]) for c in categories
        }
    return out


def summarize_mtbench(run: mtbench_run.MTBenchRunFile, answers: Any, judgements: Any) -> dict[str, Any]:
    """Everything ``report`` shows, from the stored files alone: distances, and per judge its grades, pairwise
    outcomes and the rank correlation across candidates of its scores with the judge-free distances."""
    dist = distances(answers, run)
    out: dict[str, Any] = {
        "distances": {c: {k: v.model_dump() if v else None for k, v in d.items()} for c, d in dist.items()}
    }
    for label in run.judges:
        grades, pairs = mtbench_run.judgements_from(judgements, label)
        g = {s.model: s for s in summarize_grades(grades)}
        p = {s.candidate: s for s in summarize_pairs(pairs)}
        kls = {c: d["all"].teacher_kl_mean for c, d in dist.items() if d["all"] is not None}
        measured = [c for c, v in kls.items() if v is not None]
        base = g.get(run.baseline.spec)
        base_score = base.overall if base is not None else None
        drop = [c for c in measured if c in g and g[c].overall is not None]
        rho_grade = None
        if base_score is not None:
            rho_grade = spearman([base_score - (g[c].overall or 0.0) for c in drop], [kls[c] or 0.0 for c in drop])
        won = [c for c in measured if c in p and p[c].win_rate is not None]
        rho_win = spearman([p[c].win_rate or 0.0 for c in won], [kls[c] or 0.0 for c in won])
        out[label] = {
            "grades": [asdict(s) for s in g.values()],
            "pairs": [asdict(s) for s in p.values()],
            "spearman_grade_drop_vs_teacher_kl": rho_grade,
            "spearman_win_rate_vs_teacher_kl": rho_win,
            "candidates_correlated": max(len(drop), len(won)),
        }
    return out
