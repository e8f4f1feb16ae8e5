"""The knapsack behind `advise` is exact: against brute force on instances whose options' costs differ by less than
the 1e-4 bit-per-weight bucket the solver used to merge costs at (where the bucketed solver answers wrongly)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flipscope.attribution.knapsack import Option, least_cost, least_value
from flipscope.runs.advise import AdviseSettings, _solve

#: Weights in the instances below: advise's old bucket of 1e-4 bit per weight is then 1 bit of cost.
TOTAL = 10_000
BUCKET = TOTAL * 1e-4


def _close_instance(seed: int, n: int = 5, k: int = 3) -> list[list[Option]]:
    """Per unit, k options whose costs lie within one bucket of each other; more bits, less KL (not always)."""
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(n):
        base = rng.uniform(3, 5) * TOTAL / n  # bits: ~4 bits per weight over this unit's share of the weights
        costs = base + np.sort(rng.uniform(0, 0.9 * BUCKET, k))
        values = np.sort(rng.exponential(1.0, k))[::-1] * rng.uniform(0.7, 1.3, k)
        units.append([Option(float(c), float(v)) for c, v in zip(costs, values, strict=True)])
    return units


def _everything(units: list[list[Option]]) -> list[tuple[float, float]]:
    """(cost, value) of every choice, summed in the solver's order."""
    out = []
    for picks in itertools.product(*(range(len(u)) for u in units)):
        cost = value = 0.0
        for u, j in zip(units, picks, strict=True):
            cost, value = cost + u[j].cost, value + u[j].value
        out.append((cost, value))
    return out


def test_a_cheaper_choice_inside_one_bucket_is_not_lost() -> None:
    """Unit 1's two options cost 100 and 100.5 bits (one bucket): the budget of 200.2 bits fits only the cheaper;
    merging the bucket kept the 100.5-bit option and found nothing that fits."""
    units = [[Option(100.0, 1.0), Option(100.5, 0.5)], [Option(100.0, 0.0)]]
    settings = AdviseSettings(target_bits=200.2 / TOTAL)
    got = _solve(units, settings, TOTAL)
    assert got is not None and got.picks == (0, 0) and got.cost == pytest.approx(200.0)


@pytest.mark.parametrize("seed", range(6))
def test_advise_knapsack_matches_brute_force_below_a_bucket(seed: int) -> None:
    units = _close_instance(seed)
    everything = _everything(units)
    costs = sorted({c for c, _ in everything})
    wrong = 0
    for budget in costs[:: max(1, len(costs) // 40)]:  # budgets at the choices' own costs: ties included
        best = min(v for c, v in everything if c <= budget)
        got = _solve(units, AdviseSettings(target_bits=budget / TOTAL), TOTAL)
        direct = least_value(units, budget)
        assert got is not None and direct is not None
        assert got.cost <= budget and direct.value == pytest.approx(best, rel=1e-12)
        wrong += got.value != pytest.approx(best, rel=1e-12)
    values = sorted({v for _, v in everything})
    for kl_budget in values[:: max(1, len(values) // 40)]:
        cheapest = min(c for c, v in everything if v <= kl_budget)
        got = _solve(units, AdviseSettings(budget_kl=kl_budget), TOTAL)
        direct = least_cost(units, kl_budget)
        assert got is not None and direct is not None and direct.cost == pytest.approx(cheapest, rel=1e-12)
        wrong += got.cost != pytest.approx(cheapest, rel=1e-12)
    assert wrong == 0


def test_pruning_by_what_the_remaining_units_need_keeps_the_optimum() -> None:
    """Entries that cannot fit once the remaining units take their cheapest (or least-KL) options are dropped
    early: the answer is still brute force's, on budgets where only a few choices fit."""
    units = _close_instance(7, n=6, k=3)
    everything = _everything(units)
    floor = min(c for c, _ in everything)
    for budget in (floor, floor + 0.3 * BUCKET, floor + 2 * BUCKET, floor + 6 * BUCKET):
        fits = [v for c, v in everything if c <= budget]
        got = least_value(units, budget)
        assert got is not None and got.value == pytest.approx(min(fits), rel=1e-12)
    assert least_value(units, floor - 1e-6) is None
    lowest = min(v for _, v in everything)
    got = least_cost(units, lowest)
    assert got is not None and got.value == pytest.approx(lowest, rel=1e-12)
    assert least_cost(units, lowest * (1 - 1e-9)) is None


def _dp_least_value(units: list[list[Option]], budget: int) -> float:
    """The classic table over integer capacities 0 … budget: an independent exact answer for integer costs."""
    best = np.zeros(budget + 1)  # best[c]: least value of the units so far within cost c
    for options in units:
        step = np.full(budget + 1, np.inf)
        for o in options:
            cost = int(o.cost)
            if cost <= budget:
                step[cost:] = np.minimum(step[cost:], best[: budget + 1 - cost] + o.value)
        best = step
    return float(best[budget])


@pytest.mark.parametrize("seed", range(2))
def test_many_units_match_the_capacity_table(seed: int) -> None:
    """80 units × 5 options (too many for brute force): the frontier's optimum equals the capacity table's at
    budgets across the whole range."""
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(80):
        costs = np.sort(rng.choice(np.arange(20, 60), 5, replace=False))
        values = np.sort(rng.exponential(1.0, 5))[::-1] * rng.uniform(0.5, 1.5, 5)
        units.append([Option(float(c), float(v)) for c, v in zip(costs, values, strict=True)])
    low, high = sum(int(u[0].cost) for u in units), sum(int(u[-1].cost) for u in units)
    for budget in np.linspace(low, high, 5).astype(int):
        got = least_value(units, float(budget))
        assert got is not None and got.cost <= budget
        assert got.value == pytest.approx(_dp_least_value(units, int(budget)), rel=1e-9)
