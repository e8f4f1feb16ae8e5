"""The numbers of a screen, from what it measured: each candidate's sample flips and choice KL, its corpus KL, its
predicted flips per task (``metrics.calibration``, its own pairs left out), the ranking, the Pareto set and "run
fully?" (``metrics.screening``). Pure: `screen` calls it after running, `report` again on the stored files."""

from __future__ import annotations

from dataclasses import dataclass, field

from flipscope.metrics import ItemScore, TaskSummary, choice_kl, pair_up
from flipscope.metrics.calibration import (
    MIN_PAIRS,
    CalibrationPair,
    Fit,
    fit,
    fit_without,
    log_mean_variance,
    predict,
)
from flipscope.metrics.paired import spearman
from flipscope.metrics.screening import Screened, pareto, verdicts
from flipscope.store.screen_run import CalibrationInfo, Estimate, ScreenCandidate, StoredPair


@dataclass(frozen=True)
class ScreenInputs:
    """What a screen measured. ``summary[candidate][task]``: the sample's compare summaries (with "all" over several
    tasks); ``scores``: its per-item scores by model (the baseline's too); ``corpus[candidate]``: (KL mean, its
    standard error), empty without windows; ``pairs``: from --calibrate runs (empty: calibrate on the sample);
    ``measured[candidate]``: full-run flips per task and the folder they come from."""

    baseline: str
    tasks: list[str]
    summary: dict[str, dict[str, TaskSummary]]
    scores: dict[str, list[ItemScore]]
    corpus: dict[str, tuple[float, float]] = field(default_factory=dict)
    bits: dict[str, float | None] = field(default_factory=dict)
    pairs: list[StoredPair] = field(default_factory=list)
    measured: dict[str, tuple[dict[str, Estimate], str]] = field(default_factory=dict)
    level: float = 0.95


@dataclass(frozen=True)
class Assessment:
    candidates: list[ScreenCandidate]
    calibration: CalibrationInfo
    ranked_by: str
    pareto_basis: str
    pooled: str
    notes: list[str]


def task_flips(by_task: dict[str, TaskSummary]) -> dict[str, Estimate]:
    """A run's measured flips per task (and "all"), each with its Wilson interval: (point, low, high)."""
    return {t: (s.flips, *s.flips_ci) for t, s in by_task.items() if s.flips is not None and s.flips_ci}


def _estimate(s: TaskSummary) -> Estimate | None:
    if s.flips is None or s.flips_ci is None:
        return None
    return (s.flips, s.flips_ci[0], s.flips_ci[1])


def sample_pairs(summary: dict[str, dict[str, TaskSummary]], tasks: list[str]) -> list[CalibrationPair]:
    """One pair per (candidate, task) of the sample: its mean choice KL and flip count."""
    return [
        CalibrationPair(s.choice_kl_mean, s.flips_c2i + s.flips_i2c, s.n, label, task)
        for label, by_task in summary.items()
        for task in tasks
        if (s := by_task.get(task)) is not None and s.choice_kl_mean is not None and s.n
    ]


def item_kls(base: list[ItemScore], cand: list[ItemScore], task: str | None) -> list[float]:
    """Per-item choice KL(B‖C) of the candidate's multiple-choice items (of ``task``; None: every task)."""
    pairs = [p for p in pair_up(base, cand) if task is None or p.baseline.task == task]
    kept = [p for p in pairs if p.baseline.has_choices and p.baseline.finite]  # not free-form, not one continuation
    return [choice_kl(p.baseline.logprobs, p.candidate.logprobs) for p in kept if p.candidate.finite]


def _calibration(inputs: ScreenInputs) -> tuple[list[CalibrationPair], CalibrationInfo]:
    if inputs.pairs:
        pairs = [CalibrationPair(p.choice_kl, p.flips, p.n, p.candidate, p.task) for p in inputs.pairs]
        runs = list(dict.fromkeys(p.run for p in inputs.pairs))
        source = "runs"
    else:
        pairs, runs, source = sample_pairs(inputs.summary, inputs.tasks), [], "sample"
    line = fit(pairs)
    rho = spearman([p.kl for p in pairs], [p.flips / p.n for p in pairs]) if len(pairs) > 1 else None
    info = CalibrationInfo(source=source, runs=runs, pairs=len(pairs), slope=line.slope if line else None,  # type: ignore[arg-type]
                           intercept=line.intercept if line else None, resid_sd=line.resid_sd if line else None,
                           spearman=rho, level=inputs.level)  # fmt: skip
    return pairs, info


def _predictions(
    inputs: ScreenInputs, label: str, line: Fit | None, keys: list[str], from_runs: bool
) -> dict[str, Estimate | None]:
    out: dict[str, Estimate | None] = {}
    for key in keys:
        s = inputs.summary[label].get(key)
        if line is None or s is None or s.choice_kl_mean is None:
            out[key] = None
            continue
        variance = 0.0
        if from_runs:  # the pairs' KLs are full-run means: this sample's KL adds its own noise
            base = inputs.scores.get(inputs.baseline, [])
            variance = log_mean_variance(item_kls(base, inputs.scores.get(label, []), None if key == "all" else key))
        p = predict(line, s.choice_kl_mean, kl_variance=variance, level=inputs.level)
        out[key] = (p.point, p.low, p.high)
    return out


def assess(inputs: ScreenInputs) -> Assessment:
    """Every candidate's row of the screen table, its rank, the Pareto set and "run fully?"."""
    labels = list(inputs.summary)
    keys = [*inputs.tasks, "all"] if len(inputs.tasks) > 1 else list(inputs.tasks)
    pooled = keys[-1]
    pairs, info = _calibration(inputs)
    notes = [_calibration_note(info)]
    rows = []
    for label in labels:
        line = fit_without(pairs, label)
        by_task = inputs.summary[label]
        kl = inputs.corpus.get(label)
        rows.append(ScreenCandidate(
            spec=label, rank=0, bits=inputs.bits.get(label), corpus_kl=kl[0] if kl else None,
            corpus_kl_se=kl[1] if kl else None,
            choice_kl={k: by_task[k].choice_kl_mean if k in by_task else None for k in keys},
            sample_flips={k: _estimate(by_task[k]) if k in by_task else None for k in keys},
            sample_n={k: by_task[k].n for k in keys if k in by_task},
            predicted_flips=_predictions(inputs, label, line, keys, info.source == "runs"),
            fit_pairs=line.pairs if line else 0, pareto=False, run_fully="",
            measured_flips=inputs.measured.get(label, ({}, ""))[0],
            measured_from=inputs.measured[label][1] if label in inputs.measured else None,
        ))  # fmt: skip
    predicted = all(r.predicted_flips.get(pooled) is not None for r in rows)
    if rows and not predicted:
        notes.append(_no_prediction_note(rows, pooled, info))
    basis = "predicted flips" if predicted else "sample flips"
    flips = [(r.predicted_flips if predicted else r.sample_flips).get(pooled) for r in rows]
    screened = [Screened(*(f or (1.0, 1.0, 1.0)), size=r.bits) for r, f in zip(rows, flips, strict=True)]
    front, verdict = pareto(screened), verdicts(screened)
    ranked_by = basis
    if rows and all(r.corpus_kl is not None for r in rows):
        ranked_by = "corpus KL"
    elif rows and all(r.choice_kl.get(pooled) is not None for r in rows):
        ranked_by = "sample choice KL"  # the measure itself: each prediction's own fit would bend the order
    order = sorted(range(len(rows)), key=lambda i: (_key(rows[i], ranked_by, pooled, flips[i]), rows[i].spec))
    out = []
    for rank, i in enumerate(order, start=1):
        out.append(rows[i].model_copy(update={"rank": rank, "pareto": front[i], "run_fully": verdict[i].value}))
    notes.append(_rule_note(basis, ranked_by))
    return Assessment(out, info, ranked_by, basis, pooled, notes)


def _key(row: ScreenCandidate, ranked_by: str, pooled: str, flips: Estimate | None) -> float:
    if ranked_by == "corpus KL" and row.corpus_kl is not None:
        return row.corpus_kl
    if ranked_by == "sample choice KL":
        return row.choice_kl.get(pooled) or 0.0
    return flips[0] if flips is not None else float("inf")


def _calibration_note(info: CalibrationInfo) -> str:
    where = (
        f"{info.pairs} (candidate, task) pairs measured on every item in --calibrate runs ({', '.join(info.runs)}); "
        "a candidate measured there is predicted from the other candidates' pairs only"
        if info.source == "runs"
        else f"{info.pairs} (candidate, task) pairs measured on this screen's own sample, each candidate predicted "
        "from the other candidates' pairs only (leave-one-candidate-out): the interval is for a flip rate measured on "
        "a sample of this size, wider than the full task's"
    )
    fitted = (
        f"; fit on all: log-odds(flips) = {info.intercept:.3f} + {info.slope:.3f}·log(choice KL + 1e-6), residual "
        f"sd {info.resid_sd:.3f}"
        if info.slope is not None and info.intercept is not None and info.resid_sd is not None
        else ""
    )
    rho = f", Spearman ρ(KL, flips) {info.spearman:+.2f}" if info.spearman is not None else ""
    warn = "; the slope is not positive: KL does not track flips in these pairs, so the predictions mean little" if (
        info.slope is not None and info.slope <= 0) else ""  # fmt: skip
    return (
        f"calibration: flips predicted from the sample's mean choice KL by a line fitted in log-odds vs log-KL on "
        f"{where}{fitted}{rho}; intervals are {info.level:.0%} prediction intervals{warn}"
    )


def _no_prediction_note(rows: list[ScreenCandidate], pooled: str, info: CalibrationInfo) -> str:
    least = min((r.fit_pairs for r in rows), default=0)
    why = (
        f"its fit had {least} usable pairs (at least {MIN_PAIRS} with different KLs are needed)"
        if least < MIN_PAIRS
        else "its task has no choice KL (free-form tasks are not predicted)"
    )
    return (
        f"no prediction of flips ({pooled}) for some candidate: {why}; the table shows the sample's measured flips "
        f"with their Wilson 95% interval instead (calibration pairs: {info.pairs})"
    )


def _rule_note(basis: str, ranked_by: str) -> str:
    return (
        f"ranked by {ranked_by} (lowest first); Pareto set of nominal bits per weight against {basis} (unknown size: "
        f"no smaller than any other); run fully? yes = on the Pareto set; maybe = off it, but no candidate at most "
        f"as large has its whole {basis} interval below this one's low end (the screen cannot tell them apart); no = "
        "one does"
    )
