"""``flipscope advise``: a mixed-precision RTN plan under a budget, from measured per-unit sensitivities (corpus KL
with only that unit at that width; a width is a bit count at a group size), chosen by an exact knapsack, optionally
refined in context (each unit re-measured one width up and down with the plan applied to every other unit, and the
knapsack solved again over those marginal changes); and hand-made recipes (llama.cpp's Q4_K_M style) written as
the same kind of plan.

Fitted on one set of windows, judged on another: sensitivities (and refinement's marginal changes) are measured on
the calibration windows (by default a mix of documentation, code and exam questions), the plan, each refinement
round's keep-or-discard and the uniform references on evaluation windows disjoint from them (by default prose of
another domain); windows overlapping on the same corpus are refused. A width whose KL is NaN or infinite on any
calibration window is refused for that unit (never given a mean over the windows left), logged and recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flipscope.attribution.ablate import WindowKL
from flipscope.attribution.knapsack import Choice, Option, least_cost, least_value
from flipscope.attribution.sensitivity import Candidate, cache_file, single_unit
from flipscope.attribution.units import Unit, UnitKind, check_span, make_units
from flipscope.compress import RTNConfig, apply_compression
from flipscope.compress.plan import average_bits, check_layers, read_plan, write_plan
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics.windows import WindowDifference, paired_by_window
from flipscope.models import parse_spec
from flipscope.runs.attribute import AblationSettings, Session, open_session
from flipscope.tasks.corpus import CALIBRATION_CORPUS, HELD_OUT_CORPUS

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AdviseSettings:
    bits: tuple[int, ...] = (3, 4, 5, 6, 8)
    group_sizes: tuple[int | None, ...] = (64,)  # every bit width at each (None: one scale per output channel)
    by: UnitKind = UnitKind.LINEAR
    span: int | None = None  # with by=module: consecutive blocks per unit (None: all blocks)
    target_bits: float | None = None  # average bits per weight, group scales included
    budget_kl: float | None = None  # or: the fewest bits whose predicted KL stays within this
    refine: int = 0  # rounds of in-context refinement (0: the single-unit knapsack's plan as it is)
    start: str | None = None  # a plan file to refine instead of measuring single-unit sensitivities
    ablation: AblationSettings = field(default_factory=AblationSettings)  # the calibration windows (corpus None:
    # CALIBRATION_CORPUS)
    eval_corpus: str | None = HELD_OUT_CORPUS  # the evaluation windows' corpus (None: the calibration corpus)
    eval_windows: tuple[int, int] = (0, 8)  # first, end (exclusive): disjoint from the calibration windows


@dataclass(frozen=True)
class Round:
    """One refinement round: the plan the knapsack chose over in-context changes (predicted and measured on the
    calibration windows), its KL on the evaluation windows, and whether it was kept (decided on those)."""

    predicted_kl: float
    calibration_kl: float
    eval_kl: float
    avg_bits: float
    passes: int
    kept: bool


@dataclass(frozen=True)
class Reference:
    """A uniform width on the evaluation windows: its bits, its KL per window and mean, and the plan minus it."""

    avg_bits: float
    eval_kl: float
    per_window: tuple[float, ...]
    difference: WindowDifference | None  # plan − this, paired by window; None where either is not finite


@dataclass
class Advice:
    plan: Path
    avg_bits: float
    predicted_kl: float | None  # the single-unit knapsack's prediction (Σ single-unit KLs); None refining a given plan
    calibration_kl: float  # of the plan written, on the calibration windows (where it was fitted)
    eval_kl: float  # of the plan written, on the evaluation windows
    eval_per_window: tuple[float, ...] = ()
    uniform: dict[str, Reference] = field(default_factory=dict)  # "w4g64" → on the evaluation windows
    rounds: list[Round] = field(default_factory=list)
    first_calibration_kl: float = float("nan")  # of the plan before refinement
    first_eval_kl: float = float("nan")
    refused: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # unit → width → non-finite windows
    calibration: dict[str, Any] = field(default_factory=dict)  # corpus, sha256, window indices
    evaluation: dict[str, Any] = field(default_factory=dict)
    units: int = 0
    seconds: float = 0.0


def _name(width: RTNConfig) -> str:
    """A width's name in the weight bank and the sensitivity table: "w4g64", "w8" (one scale per channel)."""
    return f"w{width.bits}" + (f"g{width.group_size}" if width.group_size else "")


def _capture_widths(session: Session, widths: tuple[RTNConfig, ...]) -> None:
    """Every Linear at each width, kept in the weight bank as version ``_name(width)``."""
    for width in widths:

        def apply(config: RTNConfig = width) -> None:
            apply_compression(config, session.backend.model)

        session.bank.capture(_name(width), apply)


@dataclass(frozen=True)
class _Problem:
    """What every step of ``advise`` shares: the session, the units, the widths and each (unit, width)'s bits."""

    session: Session
    units: list[Unit]
    widths: tuple[RTNConfig, ...]  # in order of bits per weight
    costs: list[list[float]]  # [unit][width]: bits stored

    @property
    def total(self) -> int:
        return sum(u.params for u in self.units)

    def _use(self, picks: Sequence[int]) -> None:
        self.session.bank.use({n: _name(self.widths[j]) for u, j in zip(self.units, picks, strict=True)
                               for n in u.linears})  # fmt: skip

    def measure(self, picks: Sequence[int]) -> WindowKL:
        """Corpus KL on the calibration windows with each unit at its picked width."""
        self._use(picks)
        return self.session.meter()

    def evaluate(self, picks: Sequence[int]) -> WindowKL:
        """Corpus KL on the evaluation windows with each unit at its picked width."""
        assert self.session.eval_meter is not None
        self._use(picks)
        return self.session.eval_meter()

    def avg_bits(self, picks: Sequence[int]) -> float:
        return sum(self.costs[i][j] for i, j in enumerate(picks)) / self.total

    def plan(self, picks: Sequence[int]) -> dict[str, RTNConfig]:
        return {n: self.widths[j] for u, j in zip(self.units, picks, strict=True) for n in u.linears}  # fmt: skip


def _problem(session: Session, settings: AdviseSettings) -> _Problem:
    modules = session.bank.modules
    every = {RTNConfig(bits=b, group_size=g) for b in settings.bits for g in settings.group_sizes}
    for width in every:  # the plan's own rule: each group must divide the layer's input width
        check_layers(dict.fromkeys(modules, width), _input_widths(session), f"--group {width.group_size or 0}")

    def everywhere(width: RTNConfig) -> tuple[float, int]:
        return average_bits(modules, dict.fromkeys(modules, width)), width.bits

    widths = tuple(sorted(every, key=everywhere))
    _capture_widths(session, widths)
    names = list(session.bank.versions[_name(widths[-1])])
    units = make_units([(n, modules[n].weight.numel()) for n in names], settings.by, span=settings.span)
    costs = [[average_bits(modules, dict.fromkeys(u.linears, w)) * u.params for w in widths] for u in units]
    return _Problem(session, units, widths, costs)


def _solve(options: list[list[Option]], settings: AdviseSettings, total: int, *, spent_kl: float = 0.0
           ) -> Choice | None:  # fmt: skip
    """The knapsack under the settings' budget (None: nothing fits); ``spent_kl``: KL counted outside the options."""
    if settings.target_bits is not None:
        return least_value(options, settings.target_bits * total)
    return least_cost(options, float(settings.budget_kl or 0.0) - spent_kl)


def _single_unit(p: _Problem, settings: AdviseSettings, shown: Display, refused: dict[str, dict[str, list[int]]]
                 ) -> tuple[list[int], float, dict[str, Any]]:  # fmt: skip
    """Every (unit, width) with only that unit at that width on the calibration windows; the knapsack's picks,
    prediction and the table. A width not finite on every window is refused for that unit (``refused``)."""

    def widths(unit: Unit) -> list[Candidate]:
        costs = p.costs[p.units.index(unit)]
        return [Candidate(_name(w), _name(w), cost) for w, cost in zip(p.widths, costs, strict=True)]

    found = single_unit(p.units, widths, p.session.bank, p.session.meter, shown,
                        fix="offer wider --bits, or run in float32 (--dtype float32)",
                        cache=_cache_file(p, settings))  # fmt: skip
    refused.update(found.refused)
    choice = _solve(found.options, settings, p.total)
    if choice is None:
        cheapest = sum(min(o.cost for o in row) for row in found.options) / p.total
        raise FlipscopeError(
            f"no plan fits the budget (the fewest bits possible: {cheapest:.3f} per weight)",
            fix="raise --target-bits / --budget-kl, or add lower --bits",
        )
    index = {_name(w): j for j, w in enumerate(p.widths)}
    return [index[kept[c]] for kept, c in zip(found.offered, choice.picks, strict=True)], choice.value, found.table


def _cache_file(p: _Problem, settings: AdviseSettings) -> Path:
    """Where the single-unit sensitivities are kept, by everything that makes them (the model, the widths, the
    units, the calibration windows, the libraries): a second budget re-measures nothing."""
    from flipscope.models.registry import fingerprint
    from flipscope.plumbing.version import library_versions

    key = {"model": fingerprint(p.session.spec), "widths": [_name(w) for w in p.widths], "by": str(settings.by),
           "span": settings.span, "windows": p.session.windows.record(),
           "ablation": {k: getattr(settings.ablation, k) for k in ("ctx", "scored_fraction", "dtype", "batch")},
           "device": str(getattr(p.session.backend, "device", settings.ablation.device)),
           "versions": library_versions()}  # fmt: skip
    return cache_file("rtn", key)


def _input_widths(session: Session) -> dict[str, int]:
    return {n: int(m.in_features) for n, m in session.bank.modules.items()}


def _start_picks(p: _Problem, path: str) -> list[int]:
    """A given plan's width per unit, as indices into the widths."""
    default, layers, _ = read_plan(Path(path))
    check_layers(layers, _input_widths(p.session), f"plan {path}")  # as +plan: does
    picks = []
    for unit in p.units:
        found = {layers.get(n, default) for n in unit.linears}
        if len(found) != 1:
            raise FlipscopeError(
                f"{path}: the layers of {unit.name} have different widths", fix="refine it --by linear"
            )
        (width,) = found
        if width not in p.widths:
            raise FlipscopeError(f"{path}: {unit.name} is at {width.bits} bits, group {width.group_size}",
                                 fix=f"give --bits including {width.bits} and --group including "
                                     f"{width.group_size or 0}")  # fmt: skip
        picks.append(p.widths.index(width))
    return picks


def _better(settings: AdviseSettings, new: tuple[float, float], old: tuple[float, float]) -> bool:
    """(avg bits, evaluation KL) of two plans: is the new one better under the budget? Not if its KL is not
    finite."""
    if not np.isfinite(new[1]):
        return False
    if settings.target_bits is not None:
        return new[1] < old[1] or old[0] > settings.target_bits + 1e-9  # a given plan over the budget: any that fits
    budget = float(settings.budget_kl or 0.0)
    if old[1] > budget:
        return new[1] < old[1]
    return new[1] <= budget and new[0] < old[0]


@dataclass(frozen=True)
class _State:
    """A plan (width index per unit) and its KL on the calibration and the evaluation windows."""

    picks: list[int]
    calibration: WindowKL
    evaluation: WindowKL


def _refine(p: _Problem, settings: AdviseSettings, now: _State, rnd: int, shown: Display
            ) -> tuple[_State, Round | None]:  # fmt: skip
    """One round: each unit one width down and up with the plan applied to the rest (on the calibration windows),
    the knapsack solved over those marginal changes (plus staying), the new plan measured on both sets of windows and
    kept only if it is better on the evaluation windows; no round (None) where no change fits the budget. A change
    whose KL is not finite is not offered."""
    picks, kl = now.picks, now.calibration.mean
    steps = [[k for k in (j - 1, j + 1) if 0 <= k < len(p.widths)] for j in picks]
    passes = sum(len(s) for s in steps) + 2
    options: list[list[Option]] = []
    offered: list[list[int]] = []
    with shown.progress(f"refining, round {rnd}", passes) as advance:
        for i, (j, moves) in enumerate(zip(picks, steps, strict=True)):
            row, kept = [Option(p.costs[i][j], 0.0)], [j]
            for k in moves:
                got = p.measure([*picks[:i], k, *picks[i + 1 :]])
                advance(1)
                if got.bad:
                    log.info("round %d: %s at %s not finite in calibration windows %s; not offered", rnd,
                             p.units[i].name, _name(p.widths[k]), got.bad)  # fmt: skip
                    continue
                row.append(Option(p.costs[i][k], got.mean - kl))
                kept.append(k)
            options.append(row)
            offered.append(kept)
        choice = _solve(options, settings, p.total, spent_kl=kl)
        if choice is None:
            return now, None
        new = [kept[c] for kept, c in zip(offered, choice.picks, strict=True)]
        after = _State(new, p.measure(new), p.evaluate(new))
        advance(2)
    better = _better(settings, (p.avg_bits(new), after.evaluation.mean), (p.avg_bits(picks), now.evaluation.mean))
    log.info("refinement round %d: calibration KL predicted %.4f, measured %.4f (was %.4f); evaluation KL %.4f "
             "(was %.4f): %s", rnd, kl + choice.value, after.calibration.mean, kl, after.evaluation.mean,
             now.evaluation.mean, "kept" if better else "discarded")  # fmt: skip
    result = Round(kl + choice.value, after.calibration.mean, after.evaluation.mean, p.avg_bits(new), passes, better)
    return (after if better else now), result


def advise(baseline: str, settings: AdviseSettings, *, out: str | Path, display: Display | None = None) -> Advice:
    """Measure every (unit, width), choose widths under the budget, refine in context, write the plan."""
    if (settings.target_bits is None) == (settings.budget_kl is None):
        raise FlipscopeError("give exactly one budget", fix="--target-bits B (e.g. 4.25) or --budget-kl K")
    if not settings.bits or any(not 2 <= b <= 8 for b in settings.bits):
        raise FlipscopeError(f"--bits must be 2–8, got {settings.bits}", fix="e.g. --bits 2,3,4,8")
    if settings.refine < 0:
        raise FlipscopeError(f"--refine must be 0 or more, got {settings.refine}")
    check_span(settings.by, settings.span)
    shown = display or NullDisplay()
    started = time.monotonic()
    spec = parse_spec(baseline)
    ablation = replace(settings.ablation, corpus=settings.ablation.corpus or CALIBRATION_CORPUS)
    first, end = settings.eval_windows
    evaluation = (settings.eval_corpus or ablation.corpus, first, end - first)
    session = open_session(spec, ablation, shown, evaluation=evaluation)
    refused: dict[str, dict[str, list[int]]] = {}
    try:
        p = _problem(session, settings)
        predicted: float | None = None
        table: dict[str, Any] = {}
        if settings.start:
            picks = _start_picks(p, settings.start)
        else:
            picks, predicted, table = _single_unit(p, settings, shown, refused)
        now = start = _State(picks, p.measure(picks), p.evaluate(picks))
        for got, where in ((start.calibration, "calibration"), (start.evaluation, "evaluation")):
            if got.bad:
                raise FlipscopeError(f"the plan gives NaN or infinite KL in {where} windows {got.bad}",
                                     fix="offer wider --bits, or run in float32 (--dtype float32)")  # fmt: skip
        rounds: list[Round] = []
        for rnd in range(1, settings.refine + 1):
            now, result = _refine(p, settings, now, rnd, shown)
            if result is None:
                break
            rounds.append(result)
            if not result.kept:
                break
        if settings.target_bits is not None and p.avg_bits(now.picks) > settings.target_bits + 1e-9:
            raise FlipscopeError(
                f"{settings.start}: {p.avg_bits(now.picks):.3f} bits per weight after {len(rounds)} refinement "
                f"rounds, above --target-bits {settings.target_bits}",
                fix="give more --refine rounds (each moves a layer one width), or a plan nearer the budget",
            )
        uniform = _uniform(p, now.evaluation, shown)
        avg = p.avg_bits(now.picks)
        # a kept round was chosen on the evaluation windows: their KL is then no longer held out
        chosen_on_evaluation = any(r.kept for r in rounds)
        if chosen_on_evaluation:
            log.warning(
                "a refinement round was kept because the evaluation windows' KL fell: those windows helped "
                "choose the plan, so its evaluation KL is optimistic; judge it with kld on other windows"
            )
        calibration, held_out = session.windows.record(), _record(session)
        path = write_plan(
            Path(out), p.widths[0], p.plan(now.picks),
            made_by="flipscope advise", baseline=spec.label(), by=str(settings.by), span=settings.span, avg_bits=avg,
            target_bits=settings.target_bits, budget_kl=settings.budget_kl, calibration=calibration,
            evaluation=held_out, ctx=ablation.ctx, scored_fraction=ablation.scored_fraction,
            predicted_kl=predicted, calibration_kl=now.calibration.mean, eval_kl=now.evaluation.mean,
            eval_per_window=list(now.evaluation.kl), first_calibration_kl=start.calibration.mean,
            first_eval_kl=start.evaluation.mean, rounds=[asdict(r) for r in rounds],
            uniform={name: _finite(asdict(r)) for name, r in uniform.items()}, refused=refused,
            started_from=settings.start, sensitivity=table, chosen_on_evaluation=chosen_on_evaluation,
        )  # fmt: skip
    finally:
        session.close()
    return Advice(path, avg, predicted, now.calibration.mean, now.evaluation.mean, now.evaluation.kl, uniform, rounds,
                  start.calibration.mean, start.evaluation.mean, refused, calibration, held_out, len(p.units),
                  time.monotonic() - started)  # fmt: skip


def _record(session: Session) -> dict[str, Any]:
    assert session.eval_windows is not None
    return session.eval_windows.record()


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _uniform(p: _Problem, plan: WindowKL, shown: Display) -> dict[str, Reference]:
    """Each width everywhere on the evaluation windows, and the plan minus it paired by window, for reference."""
    out = {}
    with shown.progress("uniform widths", len(p.widths)) as advance:
        for j, width in enumerate(p.widths):
            picks = [j] * len(p.units)
            got = p.evaluate(picks)
            advance(1)
            if got.bad:
                log.warning("uniform %s: NaN or infinite KL in evaluation windows %s", _name(width), got.bad)
            diff = None if got.bad else paired_by_window(np.asarray(got.windows), np.asarray(plan.kl),
                                                         np.asarray(got.kl))  # fmt: skip
            out[_name(width)] = Reference(p.avg_bits(picks), got.mean, got.kl, diff)
    return out
