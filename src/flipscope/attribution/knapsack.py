"""Choose one option (a bit width) per unit: the least predicted KL within an average-bits budget, or the fewest
bits within a KL budget — a multiple-choice knapsack solved exactly over its Pareto frontier of (cost, value) sums:
an entry is dropped only when a cheaper one has a value at least as low, or when it cannot meet the budget even if
every remaining unit takes its cheapest (least-KL) option. No cost is rounded or bucketed.

Time, measured on 210 units with SmolLM2-135M's layer sizes and random sensitivities (one shared CPU core): 6 widths
(`--bits 4,5,6 --group 64,192`) 0.5 s at 4.25 bits per weight (a frontier of ~1,000 entries), 2.7 s at 5; 10 widths
6–12 s. It grows with the frontier's size, not with the number of possible plans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Option:
    cost: float  # bits this choice stores for the unit (weights × bits per weight)
    value: float  # its predicted KL (additive across units)


@dataclass(frozen=True)
class Choice:
    picks: tuple[int, ...]  # option index per unit
    cost: float
    value: float


def frontier(units: Sequence[Sequence[Option]], *, max_cost: float | None = None, max_value: float | None = None
             ) -> list[Choice]:  # fmt: skip
    """Every choice not beaten on both cost and value, sorted by cost; with ``max_cost`` (``max_value``) only
    those within it."""
    need_cost = _still_needed([min(o.cost for o in options) for options in units])  # [U + 1]
    need_value = _still_needed([min(o.value for o in options) for options in units])
    cost, value = np.zeros(1), np.zeros(1)  # [F]: the frontier so far
    steps: list[tuple[np.ndarray, np.ndarray]] = []  # per unit: (parent index, option index) of each entry
    for u, options in enumerate(units):
        oc = np.array([o.cost for o in options])  # [K]
        ov = np.array([o.value for o in options])
        c = (cost[:, None] + oc[None, :]).ravel()  # [F·K]
        v = (value[:, None] + ov[None, :]).ravel()
        parent = np.repeat(np.arange(cost.size), oc.size)
        option = np.tile(np.arange(oc.size), cost.size)
        keep = np.ones(c.size, bool)
        if max_cost is not None:  # the remaining units add at least their cheapest options
            keep &= c + need_cost[u + 1] <= max_cost + 1e-9
        if max_value is not None:
            keep &= v + need_value[u + 1] <= max_value + 1e-15
        c, v, parent, option = c[keep], v[keep], parent[keep], option[keep]
        if c.size == 0:
            return []
        order = np.lexsort((v, c))  # by cost, then value
        c, v, parent, option = c[order], v[order], parent[order], option[order]
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], v[:-1]]))
        kept = v < best_before - 1e-15  # strictly better than every cheaper choice
        cost, value = c[kept], v[kept]
        steps.append((parent[kept], option[kept]))
    out = []
    for index in range(cost.size):
        picks, at = [], index
        for parent, option in reversed(steps):
            picks.append(int(option[at]))
            at = int(parent[at])
        out.append(Choice(tuple(reversed(picks)), float(cost[index]), float(value[index])))
    return out


def _still_needed(least: list[float]) -> np.ndarray:
    """[U + 1]: entry u = the least the units from u on can add (Σ of their smallest costs or values)."""
    return np.concatenate([np.cumsum(least[::-1])[::-1], [0.0]])


def least_value(units: Sequence[Sequence[Option]], budget: float) -> Choice | None:
    """The choice with the least total value whose cost is within ``budget`` (None if nothing fits)."""
    best = frontier(units, max_cost=budget)
    return min(best, key=lambda c: c.value) if best else None


def least_cost(units: Sequence[Sequence[Option]], value_budget: float) -> Choice | None:
    """The cheapest choice whose total value is within ``value_budget``."""
    fits = [c for c in frontier(units, max_value=value_budget) if c.value <= value_budget + 1e-15]
    return min(fits, key=lambda c: c.cost) if fits else None
