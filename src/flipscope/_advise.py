"""``flipscope advise``: a mixed-precision RTN plan under a budget, from measured per-unit sensitivities (corpus KL
with only that unit at that width; a width is a bit count at a group size), chosen by an exact knapsack, optionally
refined in context (each unit re-measured one width up and down with the plan applied to every other unit, and the
knapsack solved again over those marginal changes); and hand-made recipes (llama.cpp's Q4_K_M style) written as
the same kind of plan."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flipscope._attribute import AblationSettings, Session, open_session
from flipscope.attribution.knapsack import Choice, Option, least_cost, least_value
from flipscope.attribution.units import Unit, UnitKind, block_of, kind_of, make_units
from flipscope.compress import RTNConfig, apply_compression
from flipscope.compress.plan import average_bits, check_layers, read_plan, write_plan
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.models import parse_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdviseSettings:
    bits: tuple[int, ...] = (3, 4, 5, 6, 8)
    group_sizes: tuple[int | None, ...] = (64,)  # every bit width at each (None: one scale per output channel)
    by: UnitKind = UnitKind.LINEAR
    span: int | None = None  # with by=module: consecutive blocks per unit (None: all blocks)
    target_bits: float | None = None  # average bits per weight, group scales included
    budget_kl: float | None = None  # or: the fewest bits whose predicted KL stays within this
    refine: int = 0  # rounds of in-context refinement (0: the single-unit knapsack's plan as it is)
    start: str | None = None  # a plan file to refine instead of measuring single-unit sensitivities
    ablation: AblationSettings = field(default_factory=AblationSettings)


@dataclass(frozen=True)
class Round:
    """One refinement round: the plan the knapsack chose over in-context changes, and whether it was kept."""

    predicted_kl: float
    measured_kl: float
    avg_bits: float
    passes: int
    kept: bool


@dataclass
class Advice:
    plan: Path
    avg_bits: float
    predicted_kl: float | None  # the single-unit knapsack's prediction (Σ single-unit KLs); None refining a given plan
    measured_kl: float  # of the plan written
    uniform: dict[str, tuple[float, float]] = field(default_factory=dict)  # "w4g64" → (avg bits, measured KL)
    rounds: list[Round] = field(default_factory=list)
    first_kl: float = float("nan")  # measured KL of the plan before refinement
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

    def measure(self, picks: Sequence[int]) -> float:
        """Corpus KL with each unit at its picked width."""
        self.session.bank.use({n: _name(self.widths[j]) for u, j in zip(self.units, picks, strict=True)
                               for n in u.linears})  # fmt: skip
        return self.session.meter()

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


def _single_unit(p: _Problem, settings: AdviseSettings, shown: Display) -> tuple[list[int], float, dict[str, Any]]:
    """Every (unit, width) with only that unit at that width; the knapsack's picks, prediction and the table."""
    options: list[list[Option]] = []
    with shown.progress("sensitivities", len(p.units) * len(p.widths)) as advance:
        for unit, costs in zip(p.units, p.costs, strict=True):
            row = []
            for width, cost in zip(p.widths, costs, strict=True):
                p.session.bank.use(dict.fromkeys(unit.linears, _name(width)))
                row.append(Option(cost, p.session.meter()))
                advance(1)
            options.append(row)
    choice = _solve(options, settings, p.total)
    if choice is None:
        cheapest = sum(min(o.cost for o in row) for row in options) / p.total
        raise FlipscopeError(
            f"no plan fits the budget (the fewest bits possible: {cheapest:.3f} per weight)",
            fix="raise --target-bits / --budget-kl, or add lower --bits",
        )
    table = {u.name: {_name(w): o.value for w, o in zip(p.widths, row, strict=True)}
             for u, row in zip(p.units, options, strict=True)}  # fmt: skip
    return list(choice.picks), choice.value, table


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
    """(avg bits, KL) of two plans: is the new one better under the budget?"""
    if settings.target_bits is not None:
        return new[1] < old[1] or old[0] > settings.target_bits + 1e-9  # a given plan over the budget: any that fits
    budget = float(settings.budget_kl or 0.0)
    if old[1] > budget:
        return new[1] < old[1]
    return new[1] <= budget and new[0] < old[0]


def _refine(p: _Problem, settings: AdviseSettings, picks: list[int], kl: float, rnd: int, shown: Display
            ) -> tuple[list[int], float, Round | None]:  # fmt: skip
    """One round: each unit one width down and up with ``picks`` applied to the rest, the knapsack solved over
    those marginal changes (plus staying), the new plan measured and kept only if it is better; no round (None)
    where no change fits the budget."""
    steps = [[k for k in (j - 1, j + 1) if 0 <= k < len(p.widths)] for j in picks]
    passes = sum(len(s) for s in steps) + 1
    options: list[list[Option]] = []
    with shown.progress(f"refining, round {rnd}", passes) as advance:
        for i, (j, moves) in enumerate(zip(picks, steps, strict=True)):
            row = [Option(p.costs[i][j], 0.0)]
            for k in moves:
                row.append(Option(p.costs[i][k], p.measure([*picks[:i], k, *picks[i + 1 :]]) - kl))
                advance(1)
            options.append(row)
        choice = _solve(options, settings, p.total, spent_kl=kl)
        if choice is None:
            return picks, kl, None
        new = [j if c == 0 else steps[i][c - 1] for i, (j, c) in enumerate(zip(picks, choice.picks, strict=True))]
        measured = p.measure(new)
        advance(1)
    kept = _better(settings, (p.avg_bits(new), measured), (p.avg_bits(picks), kl))
    log.info("refinement round %d: predicted %.4f, measured %.4f (was %.4f): %s", rnd, kl + choice.value, measured,
             kl, "kept" if kept else "discarded")  # fmt: skip
    result = Round(kl + choice.value, measured, p.avg_bits(new), passes, kept)
    return (new, measured, result) if kept else (picks, kl, result)


def advise(baseline: str, settings: AdviseSettings, *, out: str | Path, display: Display | None = None) -> Advice:
    """Measure every (unit, width), choose widths under the budget, refine in context, write the plan."""
    if (settings.target_bits is None) == (settings.budget_kl is None):
        raise FlipscopeError("give exactly one budget", fix="--target-bits B (e.g. 4.25) or --budget-kl K")
    if not settings.bits or any(not 2 <= b <= 8 for b in settings.bits):
        raise FlipscopeError(f"--bits must be 2–8, got {settings.bits}", fix="e.g. --bits 2,3,4,8")
    if settings.refine < 0:
        raise FlipscopeError(f"--refine must be 0 or more, got {settings.refine}")
    shown = display or NullDisplay()
    started = time.monotonic()
    spec = parse_spec(baseline)
    session = open_session(spec, settings.ablation, shown)
    try:
        p = _problem(session, settings)
        predicted: float | None = None
        table: dict[str, Any] = {}
        if settings.start:
            picks = _start_picks(p, settings.start)
        else:
            picks, predicted, table = _single_unit(p, settings, shown)
        kl = first = p.measure(picks)
        rounds: list[Round] = []
        for rnd in range(1, settings.refine + 1):
            picks, kl, result = _refine(p, settings, picks, kl, rnd, shown)
            if result is None:
                break
            rounds.append(result)
            if not result.kept:
                break
        if settings.target_bits is not None and p.avg_bits(picks) > settings.target_bits + 1e-9:
            raise FlipscopeError(
                f"{settings.start}: {p.avg_bits(picks):.3f} bits per weight after {len(rounds)} refinement rounds, "
                f"above --target-bits {settings.target_bits}",
                fix="give more --refine rounds (each moves a layer one width), or a plan nearer the budget",
            )
        uniform = _uniform(p, shown)
        avg = p.avg_bits(picks)
        path = write_plan(
            Path(out), p.widths[0], p.plan(picks),
            made_by="flipscope advise", baseline=spec.label(), by=str(settings.by), span=settings.span, avg_bits=avg,
            target_bits=settings.target_bits, budget_kl=settings.budget_kl, predicted_kl=predicted,
            first_measured_kl=first, rounds=[asdict(r) for r in rounds], measured_kl=kl,
            corpus=settings.ablation.corpus or "default", chunks=settings.ablation.chunks,
            scored_fraction=settings.ablation.scored_fraction, started_from=settings.start,
            sensitivity=table,
        )  # fmt: skip
    finally:
        session.close()
    return Advice(path, avg, predicted, kl, uniform, rounds, first, len(p.units), time.monotonic() - started)


def _uniform(p: _Problem, shown: Display) -> dict[str, tuple[float, float]]:
    """Each width everywhere: (average bits, measured KL), for reference."""
    out = {}
    with shown.progress("uniform widths", len(p.widths)) as advance:
        for j, width in enumerate(p.widths):
            picks = [j] * len(p.units)
            out[_name(width)] = (p.avg_bits(picks), p.measure(picks))
            advance(1)
    return out


def more_bits(block: int, blocks: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the blocks, and every third block between."""
    return block < blocks // 8 or block >= 7 * blocks // 8 or (block - blocks // 8) % 3 == 2


def q4_k_m_style(linears: list[str], *, base: RTNConfig, more: RTNConfig) -> dict[str, RTNConfig]:
    """llama.cpp's Q4_K_M allocation as a plan: ``base`` everywhere, ``more`` for attention V and FFN down in the
    blocks ``more_bits`` picks (llama.cpp: Q4_K base, Q6_K there)."""
    blocks = 1 + max((block_of(n) or 0) for n in linears)
    return {n: more if kind_of(n) in ("v_proj", "down_proj") and more_bits(block_of(n) or 0, blocks) else base
            for n in linears}  # fmt: skip


def write_recipe(baseline: str, recipe: str, *, out: str | Path, group_size: int | None = 64) -> tuple[Path, float]:
    """A recipe as a plan file for ``baseline``'s layers; returns the file and its average bits per weight."""
    if recipe.lower() != "q4_k_m":
        raise FlipscopeError(f"unknown recipe {recipe!r}", fix="use q4_k_m")
    from flipscope.compress._layers import linear_layers
    from flipscope.models import LoadOptions, load_backend

    backend: Any = load_backend(parse_spec(baseline), LoadOptions(device="cpu"))
    try:
        modules = dict(linear_layers(backend.model))
    finally:
        backend.close()
    widths = q4_k_m_style(list(modules), base=RTNConfig(bits=4, group_size=group_size),
                          more=RTNConfig(bits=6, group_size=group_size))  # fmt: skip
    avg = average_bits(modules, widths)
    path = write_plan(Path(out), RTNConfig(bits=4, group_size=group_size), widths, made_by="flipscope recipe q4_k_m",
                      baseline=baseline, avg_bits=avg)  # fmt: skip
    return path, avg
