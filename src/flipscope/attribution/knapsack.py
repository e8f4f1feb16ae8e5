"""Choose one option (a bit width) per unit: the least predicted KL within an average-bits budget, or the fewest
bits within a KL budget — a multiple-choice knapsack solved over its Pareto frontier (exact with ``resolution``
0; with a resolution, choices whose costs fall within it of each other are merged, keeping the lower value)."""

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


def frontier(units: Sequence[Sequence[Option]], *, max_cost: float | None = None, resolution: float = 0.0
             ) -> list[Choice]:  # fmt: skip
    """Every choice not beaten on both cost and value, sorted by cost."""
    cost, value = np.zeros(1), np.zeros(1)  # [F]: the frontier so far
    steps: list[tuple[np.ndarray, np.ndarray]] = []  # per unit: (parent index, option index) of each entry
    for options in units:
        oc = np.array([o.cost for o in options])  # [K]
        ov = np.array([o.value for o in options])
        c = (cost[:, None] + oc[None, :]).ravel()  # [F·K]
        v = (value[:, None] + ov[None, :]).ravel()
        parent = np.repeat(np.arange(cost.size), oc.size)
        option = np.tile(np.arange(oc.size), cost.size)
        keep = np.ones(c.size, bool) if max_cost is None else c <= max_cost + 1e-9
        c, v, parent, option = c[keep], v[keep], parent[keep], option[keep]
        if c.size == 0:
            return []
        order = np.lexsort((v, c))  # by cost, then value
        c, v, parent, option = c[order], v[order], parent[order], option[order]
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], v[:-1]]))
        kept = v < best_before - 1e-15  # strictly better than every cheaper choice
        if resolution > 0:
            kept &= _thin(c, v, kept, resolution)
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


def _thin(cost: np.ndarray, value: np.ndarray, kept: np.ndarray, resolution: float) -> np.ndarray:
    """Within each cost bucket of width ``resolution``, only the Pareto entry of least value survives."""
    out = np.zeros(cost.size, bool)
    bucket = np.floor(cost / resolution).astype(np.int64)
    best: dict[int, int] = {}
    for i in np.flatnonzero(kept):
        b = int(bucket[i])
        if b not in best or value[i] < value[best[b]]:
            best[b] = int(i)
    out[list(best.values())] = True
    return out


def least_value(units: Sequence[Sequence[Option]], budget: float, *, resolution: float = 0.0) -> Choice | None:
    """The choice with the least total value whose cost is within ``budget`` (None if nothing fits)."""
    best = frontier(units, max_cost=budget, resolution=resolution)
    return min(best, key=lambda c: c.value) if best else None


def least_cost(units: Sequence[Sequence[Option]], value_budget: float, *, resolution: float = 0.0) -> Choice | None:
    """The cheapest choice whose total value is within ``value_budget``."""
    fits = [c for c in frontier(units, resolution=resolution) if c.value <= value_budget + 1e-15]
    return min(fits, key=lambda c: c.cost) if fits else None
