"""One candidate on one task, summarised: the numbers of the final table and of ``run.json``."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from pydantic import BaseModel

import flipscope.metrics.paired as paired
from flipscope.metrics.degradation import DegradationSummary, answer_degradation, summarize_degradation
from flipscope.metrics.records import NO_ANSWER, ItemScore, Pair, Scoring, answer_distance, pair_up

#: Fewer items than this never count as a collapse (too few to tell a bias from chance).
COLLAPSE_MIN_ITEMS = 20


class Bucket(BaseModel):
    lo: float
    hi: float
    n: int
    flips: int
    flip_rate: float | None


class FreeSummary(BaseModel):
    """Free-form tasks: the teacher-forced distances (KL, ΔNLL) and first divergence, all over one item set — the
    ``measured`` of ``n`` items on which every teacher-forced quantity reported is finite (an empty baseline answer,
    or a candidate that cannot score it token by token, leaves an item out of all of them); the answer comparisons
    (identical, same answer: no teacher forcing needed, as for all-flips) and how the answers ended, over all ``n``."""

    teacher_kl_mean: float | None
    delta_nll_mean: float | None
    identical: float | None  # share of all n items whose two answers are the same tokens
    same_answer: float | None  # share of all n with the same extracted final answer (1 − all-flips)
    first_divergence_median: float | None  # among measured answers that differ
    measured: int  # items the teacher-forced KL, ΔNLL and first divergence are over
    acc_strict_baseline: float | None  # lm-eval's strict-match filter ("The answer is N.")
    acc_strict_candidate: float | None
    invalid_baseline: int  # no final answer found in the text
    invalid_candidate: int
    truncated_baseline: int  # stopped at max_new_tokens
    truncated_candidate: int
    n: int | None = None  # items in the summary (None: a run.json written before it was recorded)
    #: how the answers degraded, candidate against baseline, over all n (None: a run.json written before it was)
    degradation: DegradationSummary | None = None


class SequentialSummary(BaseModel):
    """``compare --sequential``: where the candidate's question stood when it stopped — after ``n`` of the
    ``available`` items (taken in a seeded random order), its flip rate's anytime-valid ``interval`` at level ``alpha``
    (``metrics.sequential``) and the ``decision`` it gave ("below" | "above" | "within floor" | "precise" |
    "undecided"), for ``question``."""

    decision: str
    n: int
    interval: tuple[float, float]
    alpha: float
    question: str
    available: int


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
    free: FreeSummary | None = None
    #: "task/item" ids left out because that side gave a NaN or infinite log-probability there
    nonfinite_baseline: list[str] = []
    nonfinite_candidate: list[str] = []
    sequential: SequentialSummary | None = None  # compare --sequential only
    #: lm-eval's perplexity of a loglikelihood task (LAMBADA): exp(−mean log-likelihood of the target continuation)
    #: over the items, where every item is greedy-scored (None elsewhere, and in the pooled row of mixed tasks)
    perplexity_baseline: float | None = None
    perplexity_candidate: float | None = None


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def expected_share(pairs: Sequence[Pair], option: int) -> float:
    """The share of items on which answering ``option`` needs no bias: the larger of its share among the targets
    (a model that is always right picks it that often) and its chance share (the mean over items of 1/n_options
    where the item has that option)."""
    if not pairs:
        return 0.0
    targets = sum(p.baseline.target == option for p in pairs) / len(pairs)
    chance = sum(1 / len(p.baseline.logprobs) for p in pairs if option < len(p.baseline.logprobs)) / len(pairs)
    return max(targets, chance)


def collapse_warnings(pairs: Sequence[Pair], *, cloze_hint: bool = False) -> list[str]:
    """A model's answers have collapsed onto one option when, over at least ``COLLAPSE_MIN_ITEMS`` multiple-choice
    items of two options or more, the option it picks most often takes a share ``s`` of its answers that is at least
    halfway from that option's ``expected_share`` ``e`` to all items: ``s ≥ (1 + e) / 2``. So the bar is 75% on
    balanced two-option tasks (PIQA answered "A" on 60% of items is not a collapse), 62.5% on balanced four-option
    ones, and it rises with the targets' own skew (BoolQ answered "no" on 95% of items whose answer is "yes" on 62%,
    "no" on 38%: e = 50%, bar 75%, a collapse). ``cloze_hint``: the task is scored in letter format and takes
    ``--format`` (MMLU, user files), so the warning suggests ``--format cloze``; elsewhere it suggests nothing."""
    n_options = max((len(p.baseline.logprobs) for p in pairs), default=0)
    if len(pairs) < COLLAPSE_MIN_ITEMS or n_options < 2:
        return []
    out = []
    for role in ("baseline", "candidate"):
        share = paired.top_choice_share([getattr(p, role).choice for p in pairs])
        if share is None:
            continue
        option, s = share
        e = expected_share(pairs, option)
        targets = sum(p.baseline.target == option for p in pairs) / len(pairs)
        if s >= (1 + e) / 2:
            letter = "ABCDEFGHIJ"[option] if option < 10 else str(option)
            hint = " (a letter-format task: try --format cloze)" if cloze_hint else ""
            out.append(
                f"{role} picked option {letter} on {s:.0%} of items where {targets:.0%} of targets are {letter} "
                f"({n_options} options): its answers collapse onto one choice, so flips there mean little{hint}"
            )
    return out


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def free_summary(pairs: Sequence[Pair]) -> FreeSummary | None:
    """The judge-free columns of free-form items (None where the task is multiple choice). A teacher-forced quantity
    measured on some item is required on every item of the set; one measured on no item (logs imported without
    log-probabilities; teacher KL of a candidate with another tokenizer) is not reported and not required."""
    both = [(p.baseline.free, p.candidate.free, answer_distance(p)) for p in pairs]
    rows = [(b, c, d) for b, c, d in both if b is not None and c is not None and d is not None]
    if not rows:
        return None
    need_kl = any(d.teacher_kl is not None for _, _, d in rows)
    need_nll = any(d.delta_nll is not None for _, _, d in rows)
    kept = [d for _, _, d in rows if (_finite(d.teacher_kl) or not need_kl) and (_finite(d.delta_nll) or not need_nll)]
    divergence = [float(d.first_divergence) for d in kept if d.first_divergence is not None]
    return FreeSummary(
        teacher_kl_mean=paired.mean([d.teacher_kl for d in kept if d.teacher_kl is not None]),
        delta_nll_mean=paired.mean([d.delta_nll for d in kept if d.delta_nll is not None]),
        identical=_rate(sum(d.identical for _, _, d in rows), len(rows)),
        same_answer=_rate(sum(d.same_answer for _, _, d in rows), len(rows)),
        first_divergence_median=paired.quantile(divergence, 0.5),
        measured=len(kept),
        acc_strict_baseline=_rate(sum(b.correct_strict for b, _, _ in rows), len(rows)),
        acc_strict_candidate=_rate(sum(c.correct_strict for _, c, _ in rows), len(rows)),
        invalid_baseline=sum(b.answer == NO_ANSWER for b, _, _ in rows),
        invalid_candidate=sum(c.answer == NO_ANSWER for _, c, _ in rows),
        truncated_baseline=sum(b.stop_reason == "length" for b, _, _ in rows),
        truncated_candidate=sum(c.stop_reason == "length" for _, c, _ in rows),
        n=len(rows),
        degradation=summarize_degradation([(answer_degradation(b, b), answer_degradation(c, b)) for b, c, _ in rows]),
    )


def _acc_norm(pairs: Sequence[Pair], role: str) -> float | None:
    """lm-eval's acc_norm (the choice's log-likelihood per character), or None where some item has no option
    lengths to divide by (free-form; a task lm-eval reports acc only for; a multiple-input import): never acc under
    acc_norm's name."""
    scores = [getattr(p, role) for p in pairs]
    if not all(s.option_chars and s.free is None for s in scores):
        return None
    return _rate(sum(s.correct_norm for s in scores), len(scores))


def _perplexity(pairs: Sequence[Pair], role: str) -> float | None:
    """lm-eval's ``perplexity`` aggregation over the items' target log-likelihoods (greedy-scored tasks only)."""
    scores = [getattr(p, role) for p in pairs]
    if not scores or not all(s.scoring == Scoring.GREEDY and s.free is None for s in scores):
        return None
    mean = paired.mean([s.logprobs[s.target] for s in scores])
    return None if mean is None else math.exp(-mean)


def _nonfinite(pairs: Sequence[Pair], role: str) -> list[str]:
    return [f"{p.baseline.task}/{p.baseline.item_id}" for p in pairs if not getattr(p, role).finite]


def _nonfinite_warnings(pairs: Sequence[Pair], bad: dict[str, list[str]]) -> list[str]:
    out = []
    for role, ids in bad.items():
        if ids:
            shown = ", ".join(ids[:5]) + (f" … ({len(ids) - 5} more, all in run.json)" if len(ids) > 5 else "")
            out.append(
                f"{len(ids)} of {len(pairs)} items left out of every number: the {role} gave NaN or infinite "
                f"log-probabilities on them ({shown})"
            )
    return out


def summarize(pairs: Sequence[Pair], *, cloze_hint: bool = False) -> TaskSummary:
    """The numbers of one candidate on one set of paired items. Items where either side has a NaN or infinite
    log-probability are listed and left out (``n`` counts the rest). ``cloze_hint``: the items are scored in letter
    format and their task takes ``--format`` (``collapse_warnings``)."""
    bad = {role: _nonfinite(pairs, role) for role in ("baseline", "candidate")}
    excluded = [*bad["baseline"], *bad["candidate"]]
    if excluded:
        summary = summarize([p for p in pairs if p.baseline.finite and p.candidate.finite], cloze_hint=cloze_hint)
        return summary.model_copy(
            update={
                "nonfinite_baseline": bad["baseline"],
                "nonfinite_candidate": bad["candidate"],
                "warnings": [*_nonfinite_warnings(pairs, bad), *summary.warnings],
            }
        )
    n = len(pairs)
    choice_pairs = [p for p in pairs if p.baseline.has_choices]  # not free-form, not one greedy-scored continuation
    k_base = sum(p.baseline.correct for p in pairs)
    k_cand = sum(p.candidate.correct for p in pairs)
    counts = paired.flip_counts(pairs)
    choice_kls = [paired.choice_kl(p.baseline.logprobs, p.candidate.logprobs) for p in choice_pairs]
    token_kls = [p.candidate.token_kl for p in pairs if p.candidate.token_kl is not None]
    acc_b, acc_c = _rate(k_base, n), _rate(k_cand, n)
    warnings = collapse_warnings(choice_pairs, cloze_hint=cloze_hint)
    free = free_summary(pairs)
    token_kl_mean = paired.mean(token_kls) if len(token_kls) == n else None
    token_kl_items = len(token_kls)
    if free is not None and free.n == n:  # free-form only: token KL is the teacher-forced KL, over its item set
        token_kl_mean = free.teacher_kl_mean
        token_kl_items = free.measured if free.teacher_kl_mean is not None else 0
    if free is not None and free.teacher_kl_mean is None and free.delta_nll_mean is None and n:
        warnings.append("no judge-free distances: these records hold no teacher-forced scores (e.g. imported logs)")
    elif free is not None and free.measured < (free.n or 0):
        warnings.append(
            f"teacher-forced distances (KL, ΔNLL, first divergence) measured on {free.measured} of {free.n} items: "
            "the others have an empty baseline answer, or a teacher-forced number the candidate could not give (left "
            "out of those, not counted as 0; identical and same answer are over all items)"
        )
    if free is not None and free.teacher_kl_mean is None and free.delta_nll_mean is not None:
        warnings.append(
            "teacher-forced KL measured on no item: the candidate's vocabulary or tokenization differs from the "
            "baseline's, or its backend gives no full-vocabulary log-probabilities (ΔNLL is reported without it)"
        )
    if n and len(token_kls) < n and free is None:
        warnings.append(
            f"token KL missing on {n - len(token_kls)} of {n} items: the candidate's vocabulary or tokenization "
            "differs from the baseline's, a backend gave no full-vocabulary log-probabilities, or the records were "
            "imported from logs that hold none (lm-eval)"
        )
    return TaskSummary(
        n=n,
        acc_baseline=acc_b,
        acc_baseline_ci=paired.wilson_interval(k_base, n),
        acc_candidate=acc_c,
        acc_candidate_ci=paired.wilson_interval(k_cand, n),
        delta_acc=None if acc_b is None or acc_c is None else acc_c - acc_b,
        acc_norm_baseline=_acc_norm(pairs, "baseline"),
        acc_norm_candidate=_acc_norm(pairs, "candidate"),
        flips=counts.flips,
        flips_ci=paired.wilson_interval(counts.c2i + counts.i2c, n),
        flips_c2i=counts.c2i,
        flips_i2c=counts.i2c,
        all_flips=counts.all_flips,
        mcnemar_p=paired.mcnemar_exact(counts.c2i, counts.i2c),
        choice_kl_mean=paired.mean(choice_kls),
        choice_kl_median=paired.quantile(choice_kls, 0.5),
        choice_kl_p95=paired.quantile(choice_kls, 0.95),
        token_kl_mean=token_kl_mean,
        token_kl_items=token_kl_items,
        flips_by_margin=[
            Bucket(lo=b.lo, hi=b.hi, n=b.n, flips=b.flips, flip_rate=b.rate)
            for b in paired.flips_by_margin(choice_pairs)
        ],
        top_choice_baseline=paired.top_choice_share([p.baseline.choice for p in choice_pairs]),
        top_choice_candidate=paired.top_choice_share([p.candidate.choice for p in choice_pairs]),
        warnings=warnings,
        free=free,
        perplexity_baseline=_perplexity(pairs, "baseline"),
        perplexity_candidate=_perplexity(pairs, "candidate"),
    )


def summarize_run(
    baseline: list[ItemScore],
    candidate: list[ItemScore],
    tasks: Sequence[str],
    *,
    cloze_hint: Collection[str] = (),
) -> dict[str, TaskSummary]:
    """Per task, plus "all" pooling every item when there are several tasks. ``cloze_hint``: the tasks scored in
    letter format that take ``--format`` (MMLU, user files), whose collapse warnings suggest ``--format cloze``."""
    pairs = pair_up(baseline, candidate)
    out = {
        name: summarize([p for p in pairs if p.baseline.task == name], cloze_hint=name in cloze_hint) for name in tasks
    }
    if len(tasks) > 1:
        out["all"] = summarize(pairs)
    return out
