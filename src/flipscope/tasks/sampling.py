"""``--limit N``: a sample stratified by subject, fixed by a seed, the same for every model of a run."""

from __future__ import annotations

import random
from collections import defaultdict

from flipscope.tasks.items import MCItem


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` across strata proportionally to their sizes (largest remainder, ties by name)."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    exact = {name: n * size / total for name, size in sizes.items()}
    counts = {name: int(value) for name, value in exact.items()}
    left = n - sum(counts.values())
    order = sorted(sizes, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in order[:left]:
        counts[name] += 1
    return counts


def stratified_sample(items: list[MCItem], n: int | None, *, seed: int) -> list[MCItem]:
    """Keep the file order of the chosen items so runs are easy to read."""
    if n is None or n >= len(items):
        return list(items)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.subject].append(index)
    counts = allocate({name: len(idx) for name, idx in groups.items()}, n)
    chosen: list[int] = []
    for name in sorted(groups):
        rng = random.Random(f"{seed}:{name}")
        chosen += rng.sample(groups[name], counts[name])
    return [items[i] for i in sorted(chosen)]


def seeded_order(n: int, *, seed: int, salt: str) -> list[int]:
    """A random order of ``range(n)`` fixed by ``seed`` and ``salt`` (a task's name): ``compare --sequential`` takes a
    task's items in this order, so a later run with a larger ``--limit`` continues the same sequence."""
    order = list(range(n))
    random.Random(f"{seed}:order:{salt}").shuffle(order)
    return order
