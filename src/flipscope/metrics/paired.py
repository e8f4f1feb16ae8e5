"""Paired answer metrics of "Accuracy is Not All You Need": accuracy, flips, McNemar, choice KL, margins."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flipscope.metrics.kl import kl_exact
from flipscope.metrics.records import Pair, Scoring, same_answer

Z95 = 1.959963984540054
#: Edges of the baseline top-margin buckets: [0, .1), [.1, .25), [.25, .5), [.5, 1].
MARGIN_EDGES = (0.0, 0.1, 0.25, 0.5, 1.0)


def wilson_interval(k: int, n: int, *, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes out of n; None when n == 0."""
    if n == 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar test: binomial test of b vs c discordant pairs at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class FlipCounts:
    n: int
    c2i: int  # correct → incorrect
    i2c: int  # incorrect → correct
    #: any change of the chosen answer (``same_answer``: two "[invalid]" are no change); None where some item is
    #: greedy-scored: only whether its greedy answer is the target is known, not which answer it is
    changed: int | None

    @property
    def flips(self) -> float | None:
        return (self.c2i + self.i2c) / self.n if self.n else None

    @property
    def all_flips(self) -> float | None:
        return self.changed / self.n if self.n and self.changed is not None else None


def flip_counts(pairs: Sequence[Pair]) -> FlipCounts:
    c2i = sum(1 for p in pairs if p.baseline.correct and not p.candidate.correct)
    i2c = sum(1 for p in pairs if not p.baseline.correct and p.candidate.correct)
    greedy = any(p.baseline.scoring == Scoring.GREEDY and p.baseline.free is None for p in pairs)
    changed = None if greedy else sum(1 for p in pairs if not same_answer(p))
    return FlipCounts(len(pairs), c2i, i2c, changed)


def softmax(logprobs: Sequence[float]) -> list[float]:
    top = max(logprobs)
    weights = [math.exp(v - top) for v in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def log_softmax(logprobs: Sequence[float]) -> list[float]:
    top = max(logprobs)
    log_total = top + math.log(sum(math.exp(v - top) for v in logprobs))
    return [v - log_total for v in logprobs]


def choice_kl(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """KL(B‖C) between the softmaxes over the per-choice log-likelihoods (``metrics.kl``'s exact form: non-negative
    terms, −inf handled, a NaN log-likelihood gives NaN)."""
    lb, lc = np.array(baseline, np.float64), np.array(candidate, np.float64)  # [options]
    if len(lb) != len(lc):
        raise ValueError(f"choice_kl: {len(lb)} baseline vs {len(lc)} candidate options")
    return float(kl_exact(lb[None], lc[None])[0][0])


def top_margin(logprobs: Sequence[float]) -> float:
    """p(top choice) − p(second choice) under the softmax over choices; 1.0 with a single choice."""
    probs = sorted(softmax(logprobs), reverse=True)
    return probs[0] - (probs[1] if len(probs) > 1 else 0.0)


@dataclass(frozen=True)
class MarginBucket:
    lo: float
    hi: float
    n: int
    flips: int

    @property
    def rate(self) -> float | None:
        return self.flips / self.n if self.n else None


def flips_by_margin(pairs: Sequence[Pair], edges: Sequence[float] = MARGIN_EDGES) -> list[MarginBucket]:
    """Flip counts per bucket of the baseline's top margin; the last bucket includes its upper edge."""
    margins = [top_margin(p.baseline.logprobs) for p in pairs]
    buckets = []
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        inside = [p for p, m in zip(pairs, margins, strict=True) if lo <= m < hi or (last and m == hi)]
        flipped = sum(1 for p in inside if p.baseline.correct != p.candidate.correct)
        buckets.append(MarginBucket(lo, hi, len(inside), flipped))
    return buckets


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation quantile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def top_choice_share(choices: Sequence[int]) -> tuple[int, float] | None:
    """The most often chosen option index and its share of items: a collapse detector."""
    if not choices:
        return None
    counts: dict[int, int] = {}
    for c in choices:
        counts[c] = counts.get(c, 0) + 1
    best = min(counts, key=lambda c: (-counts[c], c))
    return best, counts[best] / len(choices)


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span. [n] → [n]."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation ρ (ties by mean rank); None with fewer than 2 pairs, a constant side, or a
    non-finite value."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} vs {len(ys)} values")
    if len(xs) < 2 or not all(math.isfinite(v) for v in (*xs, *ys)):
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
