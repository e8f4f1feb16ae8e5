"""One candidate on one task, summarised: the numbers of the final table and of ``run.json``."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from flipscope.metrics import paired
from flipscope.metrics._records import ItemScore, Pair, pair_up

#: A model whose most frequent answer position covers this share of items (with ≥ 20 items) has collapsed.
COLLAPSE_SHARE = 0.6


class Bucket(BaseModel):
    lo: float
    hi: float
    n: int
    flips: int
    flip_rate: float | None


class TaskSummary(BaseModel):
    n: int
    acc_baseline: float | None
    acc_baseline_ci: tuple[float, float] | None
    acc_candidate: float | None
    acc_candidate_ci: tuple[float, float] | None
    delta_acc: float | None
    acc_norm_baseline: float | None
    acc_norm_candidate: float | None
    flips: float | None
    flips_ci: tuple[float, float] | None
    flips_c2i: int
    flips_i2c: int
    all_flips: float | None
    mcnemar_p: float
    choice_kl_mean: float | None
    choice_kl_median: float | None
    choice_kl_p95: float | None
    token_kl_mean: float | None
    token_kl_items: int
    flips_by_margin: list[Bucket]
    top_choice_baseline: tuple[int, float] | None
    top_choice_candidate: tuple[int, float] | None
    warnings: list[str]


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def collapse_warnings(pairs: Sequence[Pair]) -> list[str]:
    out = []
    for role in ("baseline", "candidate"):
        share = paired.top_choice_share([getattr(p, role).choice for p in pairs])
        n_options = max((len(getattr(p, role).logprobs) for p in pairs), default=0)
        if share and len(pairs) >= 20 and n_options > 1 and share[1] >= COLLAPSE_SHARE:
            letter = "ABCDEFGHIJ"[share[0]] if share[0] < 10 else str(share[0])
            out.append(
                f"{role} picked option {letter} on {share[1]:.0%} of items: its answers collapse onto one choice, "
                "so flips there mean little (try --format cloze)"
            )
    return out


def summarize(pairs: Sequence[Pair]) -> TaskSummary:
    n = len(pairs)
    k_base = sum(p.baseline.correct for p in pairs)
    k_cand = sum(p.candidate.correct for p in pairs)
    counts = paired.flip_counts(pairs)
    choice_kls = [paired.choice_kl(p.baseline.logprobs, p.candidate.logprobs) for p in pairs]
    token_kls = [p.candidate.token_kl for p in pairs if p.candidate.token_kl is not None]
    acc_b, acc_c = _rate(k_base, n), _rate(k_cand, n)
    warnings = collapse_warnings(pairs)
    if n and len(token_kls) < n:
        warnings.append(
            f"token KL missing on {n - len(token_kls)} of {n} items: the candidate's vocabulary or tokenization "
            "differs from the baseline's, or a backend gave no full-vocabulary log-probabilities"
        )
    return TaskSummary(
        n=n,
        acc_baseline=acc_b,
        acc_baseline_ci=paired.wilson_interval(k_base, n),
        acc_candidate=acc_c,
        acc_candidate_ci=paired.wilson_interval(k_cand, n),
        delta_acc=None if acc_b is None or acc_c is None else acc_c - acc_b,
        acc_norm_baseline=_rate(sum(p.baseline.correct_norm for p in pairs), n),
        acc_norm_candidate=_rate(sum(p.candidate.correct_norm for p in pairs), n),
        flips=counts.flips,
        flips_ci=paired.wilson_interval(counts.c2i + counts.i2c, n),
        flips_c2i=counts.c2i,
        flips_i2c=counts.i2c,
        all_flips=counts.all_flips,
        mcnemar_p=paired.mcnemar_exact(counts.c2i, counts.i2c),
        choice_kl_mean=paired.mean(choice_kls),
        choice_kl_median=paired.quantile(choice_kls, 0.5),
        choice_kl_p95=paired.quantile(choice_kls, 0.95),
        token_kl_mean=paired.mean(token_kls) if len(token_kls) == n else None,
        token_kl_items=len(token_kls),
        flips_by_margin=[
            Bucket(lo=b.lo, hi=b.hi, n=b.n, flips=b.flips, flip_rate=b.rate) for b in paired.flips_by_margin(pairs)
        ],
        top_choice_baseline=paired.top_choice_share([p.baseline.choice for p in pairs]),
        top_choice_candidate=paired.top_choice_share([p.candidate.choice for p in pairs]),
        warnings=warnings,
    )


def summarize_run(
    baseline: list[ItemScore], candidate: list[ItemScore], tasks: Sequence[str]
) -> dict[str, TaskSummary]:
    """Per task, plus "all" pooling every item when there are several tasks."""
    pairs = pair_up(baseline, candidate)
    out = {name: summarize([p for p in pairs if p.baseline.task == name]) for name in tasks}
    if len(tasks) > 1:
        out["all"] = summarize(pairs)
    return out
