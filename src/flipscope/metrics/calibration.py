"""Flips predicted from KL: a straight line fitted on measured (KL, flips) pairs, on transformed scales, with a
*prediction* interval — where one new measured flip rate at that KL falls — not the confidence interval of the line.

Scales (why): flips and KL of compressed models both span orders of magnitude (an 8-bit candidate: KL ~1e-5, flips
~1%; a 2-bit one: KL ~1, flips ~40%) and the paper finds them rank-correlated at ρ ≈ 0.98, i.e. a monotone relation
that a power law (a line in log-log) captures. Both ends need care:

- x = log(KL + ``KL_FLOOR``): KL can be 0 (a candidate identical to the baseline); below 1e-6 nats, about the
  engines' own noise floor (METRICS.md), KL differences carry nothing, so the offset costs nothing where it matters.
- y = log((k + ½) / (n − k + ½)), the empirical logit of k flips out of n (Cox 1970): finite at 0 flips and at n,
  log(k/n) for small rates (the power-law regime) and bounded above by 1 as a rate must be. Its back-transform
  expit(y) is a rate in (0, 1), so every interval end is a rate too.

Fit: ordinary least squares of y on x over the pairs (at least ``MIN_PAIRS``). For a new x₀ the prediction interval
is ŷ₀ ± t_{m−2, (1+level)/2} · sqrt(s²·(1 + 1/m + (x₀ − x̄)²/Sxx) + b²·var(x₀)), with m pairs, s² the residual
variance, b the slope and var(x₀) the variance of the new x itself (a KL measured on a sample of items; 0 where the
x is exact or of the same kind as the pairs' x, whose noise the residuals already hold). The ends map to rates
through expit (monotone, so the interval's coverage carries over).

Leave-one-out: a prediction for candidate c made from pairs that c also measured is judged on data it has seen;
``fit_without`` fits on the pairs of every other candidate (``CalibrationPair.group``) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flipscope.metrics.student_t import t_quantile

#: Nats added to KL before its log: KL may be 0; below ~1e-6 nats (the engines' noise floor) it carries nothing.
KL_FLOOR = 1e-6
#: Fewer pairs than this leave no residual degree of freedom worth an interval: no prediction.
MIN_PAIRS = 3


@dataclass(frozen=True)
class CalibrationPair:
    """One candidate on one task: its mean choice KL and ``flips`` of ``n`` items flipped; ``group``: the candidate
    (what leave-one-out leaves out)."""

    kl: float
    flips: int
    n: int
    group: str
    task: str = ""


@dataclass(frozen=True)
class Fit:
    """y = intercept + slope · x over ``pairs`` points; ``resid_sd`` = s (m − 2 degrees of freedom)."""

    intercept: float
    slope: float
    resid_sd: float
    pairs: int
    x_mean: float
    sxx: float


@dataclass(frozen=True)
class Prediction:
    """A predicted flip rate (expit of the line at x₀: the median prediction) and its prediction interval."""

    point: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.point, self.low, self.high]


def kl_scale(kl: float | np.ndarray) -> float | np.ndarray:
    """x = log(KL + KL_FLOOR)."""
    return np.log(np.asarray(kl, dtype=np.float64) + KL_FLOOR)


def flip_scale(flips: int | np.ndarray, n: int | np.ndarray) -> float | np.ndarray:
    """y = log((k + ½) / (n − k + ½)), the empirical logit."""
    k, t = np.asarray(flips, dtype=np.float64), np.asarray(n, dtype=np.float64)
    return np.log((k + 0.5) / (t - k + 0.5))


def _expit(y: float) -> float:
    return 1.0 / (1.0 + math.exp(-y)) if y >= 0 else math.exp(y) / (1.0 + math.exp(y))


def fit(pairs: Sequence[CalibrationPair]) -> Fit | None:
    """The least-squares line through the transformed pairs; None with fewer than ``MIN_PAIRS`` usable pairs or
    when every pair has the same KL (no slope to fit)."""
    kept = [p for p in pairs if p.n > 0 and math.isfinite(p.kl) and p.kl >= 0 and 0 <= p.flips <= p.n]
    if len(kept) < MIN_PAIRS:
        return None
    x = np.asarray(kl_scale(np.array([p.kl for p in kept])))  # [m]
    y = np.asarray(flip_scale(np.array([p.flips for p in kept]), np.array([p.n for p in kept])))  # [m]
    x_mean = float(x.mean())
    sxx = float(((x - x_mean) ** 2).sum())
    if sxx <= 1e-12 * max(1.0, x_mean * x_mean) * len(kept):
        return None
    slope = float(((x - x_mean) * (y - y.mean())).sum() / sxx)
    intercept = float(y.mean() - slope * x_mean)
    resid = y - (intercept + slope * x)  # [m]
    resid_sd = math.sqrt(float((resid**2).sum()) / (len(kept) - 2))
    return Fit(intercept, slope, resid_sd, len(kept), x_mean, sxx)


def fit_without(pairs: Sequence[CalibrationPair], group: str) -> Fit | None:
    """The fit on every pair but ``group``'s (leave-one-candidate-out)."""
    return fit([p for p in pairs if p.group != group])


def predict(line: Fit, kl: float, *, kl_variance: float = 0.0, level: float = 0.95) -> Prediction:
    """The flip rate predicted at ``kl`` with its ``level`` prediction interval. ``kl_variance``: the variance of
    log(KL + KL_FLOOR) of this new measurement (0: exact, or as noisy as the pairs' own)."""
    x0 = float(kl_scale(max(kl, 0.0)))
    y0 = line.intercept + line.slope * x0
    spread = line.resid_sd**2 * (1 + 1 / line.pairs + (x0 - line.x_mean) ** 2 / line.sxx)
    half = t_quantile((1 + level) / 2, line.pairs - 2) * math.sqrt(spread + line.slope**2 * kl_variance)
    return Prediction(_expit(y0), _expit(y0 - half), _expit(y0 + half))


def log_mean_variance(values: Sequence[float]) -> float:
    """The variance of log(mean + KL_FLOOR) of ``values`` (per-item KLs of a sample), by the delta method:
    var(values) / n / (mean + KL_FLOOR)²; 0 for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 0.0
    return float(v.var(ddof=1) / v.size / (v.mean() + KL_FLOOR) ** 2)
