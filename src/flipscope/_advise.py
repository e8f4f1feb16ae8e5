"""``flipscope advise``: a mixed-precision RTN plan under a budget, from measured per-unit sensitivities (corpus KL
with only that unit at that width), chosen by an exact knapsack; and hand-made recipes (llama.cpp's Q4_K_M style)
written as the same kind of plan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipscope._attribute import AblationSettings, Session, open_session
from flipscope.attribution.knapsack import Option, least_cost, least_value
from flipscope.attribution.units import UnitKind, block_of, kind_of, make_units
from flipscope.compress import RTNConfig, apply_compression
from flipscope.compress.plan import average_bits, write_plan
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.models import parse_spec


@dataclass(frozen=True)
class AdviseSettings:
    bits: tuple[int, ...] = (3, 4, 5, 6, 8)
    group_size: int | None = 64
    by: UnitKind = UnitKind.LINEAR
    target_bits: float | None = None  # average bits per weight, group scales included
    budget_kl: float | None = None  # or: the fewest bits whose predicted KL stays within this
    ablation: AblationSettings = field(default_factory=AblationSettings)


@dataclass
class Advice:
    plan: Path
    avg_bits: float
    predicted_kl: float
    measured_kl: float
    uniform: dict[int, tuple[float, float]] = field(default_factory=dict)  # bits → (avg bits, measured KL)
    units: int = 0
    seconds: float = 0.0


def _capture_widths(session: Session, bits: tuple[int, ...], group: int | None) -> None:
    """Every Linear at each width, kept in the weight bank as version "w<bits>"."""
    for b in bits:
        config = RTNConfig(bits=b, group_size=group)

        def apply(config: RTNConfig = config) -> None:
            apply_compression(config, session.backend.model)

        session.bank.capture(f"w{b}", apply)


def advise(baseline: str, settings: AdviseSettings, *, out: str | Path, display: Display | None = None) -> Advice:
    """Measure every (unit, width), choose widths under the budget, write the plan, and measure it."""
    if (settings.target_bits is None) == (settings.budget_kl is None):
        raise FlipscopeError("give exactly one budget", fix="--target-bits B (e.g. 4.25) or --budget-kl K")
    if not settings.bits or any(not 2 <= b <= 8 for b in settings.bits):
        raise FlipscopeError(f"--bits must be 2–8, got {settings.bits}", fix="e.g. --bits 2,3,4,8")
    shown = display or NullDisplay()
    started = time.monotonic()
    spec = parse_spec(baseline)
    session = open_session(spec, settings.ablation, shown)
    try:
        bits = tuple(sorted(set(settings.bits)))
        _capture_widths(session, bits, settings.group_size)
        names = list(session.bank.versions[f"w{bits[-1]}"])
        units = make_units([(n, session.bank.modules[n].weight.numel()) for n in names], settings.by)
        options: list[list[Option]] = []
        with shown.progress("sensitivities", len(units) * len(bits) + len(bits) + 1) as advance:
            for unit in units:
                row = []
                for b in bits:
                    session.bank.use(dict.fromkeys(unit.linears, f"w{b}"))
                    widths = dict.fromkeys(unit.linears, RTNConfig(bits=b, group_size=settings.group_size))
                    cost = average_bits(session.bank.modules, widths) * unit.params
                    row.append(Option(cost, session.meter()))
                    advance(1)
                options.append(row)
            total = sum(u.params for u in units)
            resolution = total * 1e-4  # cost buckets of 1e-4 bit per weight
            if settings.target_bits is not None:
                choice = least_value(options, settings.target_bits * total, resolution=resolution)
            else:
                choice = least_cost(options, float(settings.budget_kl or 0.0), resolution=resolution)
            if choice is None:
                cheapest = sum(min(o.cost for o in row) for row in options) / total
                raise FlipscopeError(
                    f"no plan fits the budget (the fewest bits possible: {cheapest:.3f} per weight)",
                    fix="raise --target-bits / --budget-kl, or add lower --bits",
                )
            widths = {n: RTNConfig(bits=bits[j], group_size=settings.group_size)
                      for unit, j in zip(units, choice.picks, strict=True) for n in unit.linears}  # fmt: skip
            session.bank.use({n: f"w{w.bits}" for n, w in widths.items()})
            measured = session.meter()
            advance(1)
            uniform = {}
            for b in bits:
                session.bank.use(dict.fromkeys(names, f"w{b}"))
                flat = dict.fromkeys(names, RTNConfig(bits=b, group_size=settings.group_size))
                uniform[b] = (average_bits(session.bank.modules, flat), session.meter())
                advance(1)
        avg = average_bits(session.bank.modules, widths)
        sensitivity = {u.name: {f"w{b}": o.value for b, o in zip(bits, row, strict=True)}
                       for u, row in zip(units, options, strict=True)}  # fmt: skip
        path = write_plan(
            Path(out), RTNConfig(bits=bits[0], group_size=settings.group_size), widths,
            made_by="flipscope advise", baseline=spec.label(), by=str(settings.by), avg_bits=avg,
            target_bits=settings.target_bits, budget_kl=settings.budget_kl, predicted_kl=choice.value,
            measured_kl=measured, corpus=settings.ablation.corpus or "default", chunks=settings.ablation.chunks,
            sensitivity=sensitivity,
        )  # fmt: skip
    finally:
        session.close()
    return Advice(path, avg, choice.value, measured, uniform, len(units), time.monotonic() - started)


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
