"""Sampled decoding's own noise floor. With ``--samples K`` every model answers each item K times at a temperature
(seeded draws); a sampled answer flips between two draws of the *same* model, so a candidate's flips mean
something only beside that floor.

The draws (``[items, K]`` booleans, correct or not):
- ``first``: the baseline's draws with seeds s … s+K−1;
- ``second``: the baseline again with seeds s+K … s+2K−1 (the floor's other side);
- ``candidate``: the candidate with the second side's seeds s+K … s+2K−1.

Flips are counted between ``first`` and ``candidate`` draw by draw, the floor between ``first`` and ``second``;
both sides of each comparison used different seeds, so the two are measured alike. Accuracy is the mean pass@1
over the draws, pass@k Chen et al.'s unbiased estimator. Error bars count items (the independent units: the K
draws of one item share its question), through ``windows.mean_by_window`` with the item as the window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipscope.metrics.windows import WindowDifference, WindowMean, mean_by_window, paired_by_window


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of ``k`` of ``n`` answers (``c`` of them right), drawn without replacement,
    is right: 1 − C(n−c, k) / C(n, k) (unbiased for the model's pass@k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))  # C(n−c, k)/C(n, k) as a product: no overflow


def pass_at_ks(correct: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """``correct`` [items, n]: the mean over items of pass@k for each k ≤ n."""
    n = correct.shape[1]
    counts = correct.sum(axis=1)
    return {k: float(np.mean([pass_at_k(n, int(c), k) for c in counts])) for k in ks if k <= n}


@dataclass(frozen=True)
class SampledSummary:
    """One candidate on one task under sampling: mean pass@1 of each side, pass@k where K allows, and the share of
    items flipped per draw (mean over items of each item's share of flipped draws, ± standard error over items) —
    the candidate's, the floor's, and their difference paired by item."""

    items: int
    draws: int
    temperature: float
    baseline_pass1: float
    candidate_pass1: float
    baseline_pass_at: dict[int, float]
    candidate_pass_at: dict[int, float]
    flips: WindowMean
    floor: WindowMean
    excess: WindowDifference  # candidate flips − floor flips, paired by item

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> SampledSummary:
        """Back from ``dataclasses.asdict`` as run.json stores it (pass@k's keys become text there)."""
        return cls(
            **{k: fields[k] for k in ("items", "draws", "temperature", "baseline_pass1", "candidate_pass1")},
            baseline_pass_at={int(k): float(v) for k, v in fields["baseline_pass_at"].items()},
            candidate_pass_at={int(k): float(v) for k, v in fields["candidate_pass_at"].items()},
            flips=WindowMean(**_nan_for_null(fields["flips"])),
            floor=WindowMean(**_nan_for_null(fields["floor"])),
            excess=WindowDifference(**_nan_for_null(fields["excess"])),
        )


def _nan_for_null(fields: dict[str, Any]) -> dict[str, Any]:
    """run.json writes NaN (an error bar over one item) as null; back as NaN."""
    return {k: math.nan if v is None else v for k, v in fields.items()}


def powers_of_two(k: int) -> tuple[int, ...]:
    """1, 2, 4 … up to ``k``, and ``k`` itself: the pass@k reported."""
    out = [2**i for i in range(int(math.log2(k)) + 1)] if k >= 1 else []
    return tuple(sorted({*out, k})) if k >= 1 else ()


def flips_per_draw(a: np.ndarray, b: np.ndarray) -> tuple[WindowMean, np.ndarray, np.ndarray]:
    """``a``, ``b``: [items, K] booleans. The share of items flipped per draw (± SE over items), and the per-draw
    flip indicators [items·K] with the item each belongs to."""
    items, k = a.shape
    unit = np.repeat(np.arange(items), k)  # [items·K]
    flipped = (a != b).reshape(-1).astype(np.float64)
    return mean_by_window(unit, flipped)[0], flipped, unit


def sampled_summary(
    first: np.ndarray, second: np.ndarray, candidate: np.ndarray, *, temperature: float
) -> SampledSummary:
    """``first``, ``second``, ``candidate``: [items, K] booleans (see the module's doc)."""
    if not first.shape == second.shape == candidate.shape or first.ndim != 2 or first.size == 0:
        raise ValueError(f"draws differ in shape or are empty: {first.shape}, {second.shape}, {candidate.shape}")
    items, k = first.shape
    flips, flipped, unit = flips_per_draw(first, candidate)
    floor, floored, _ = flips_per_draw(first, second)
    ks = powers_of_two(k)
    both = np.concatenate([first, second], axis=1)  # the baseline's 2K draws
    return SampledSummary(
        items=items,
        draws=k,
        temperature=temperature,
        baseline_pass1=float(both.mean()),
        candidate_pass1=float(candidate.mean()),
        baseline_pass_at=pass_at_ks(both, ks),
        candidate_pass_at=pass_at_ks(candidate, ks),
        flips=flips,
        floor=floor,
        excess=paired_by_window(unit, flipped, floored),
    )
