"""Corpus statistics from per-position arrays, as llama.cpp's ``llama-perplexity --kl-divergence`` prints them and
beyond: perplexities with propagated uncertainty, KL(B‖C)'s mean, σ, extremes and percentiles, KL(C‖B)'s mean, Δp,
same-top rate, top-k agreement, KL by the baseline's confidence; every ± a standard error over windows, not
positions. Pure NumPy over stored arrays, so a run can be re-summarised without a model. The statistics over
positions (σ, extremes, percentiles) are only as exact as the per-position KLs given: from a compact store those
are estimates or bounds (``KLDRunSettings.kl_positions``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, field_validator

#: Percentiles printed for KL and Δp, llama.cpp's set.
KL_PERCENTILES = (99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1)
DP_PERCENTILES = (99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1)
#: Bucket edges on the baseline's top probability.
CONFIDENCE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ValueErr(BaseModel):
    """A mean over windows and its standard error (NaN with one window: no error bar; JSON writes it as null)."""

    value: float
    err: float

    @field_validator("err", mode="before")
    @classmethod
    def _no_error_bar(cls, err: object) -> object:
        return math.nan if err is None else err  # null in run.json: one window, read back as NaN


class Bucket(BaseModel):
    low: float
    high: float
    n: int
    kl_mean: float | None


class CorpusSummary(BaseModel):
    n: int
    ppl_base: ValueErr
    ppl_cand: ValueErr
    ln_ppl_ratio: ValueErr
    ppl_ratio: ValueErr
    ppl_diff: ValueErr
    ln_ppl_correlation: float
    kl_mean: ValueErr
    kl_std: float
    kl_max: float
    kl_min: float
    kl_percentiles: dict[str, float]
    kl_reverse_mean: ValueErr
    dp_mean: ValueErr
    dp_rms: ValueErr
    dp_max: float
    dp_min: float
    dp_percentiles: dict[str, float]
    same_top: ValueErr
    topk_agreement: dict[str, float]
    kl_by_confidence: list[Bucket]
    #: windows left out because a model gave NaN or infinite log-probabilities somewhere in them
    excluded_windows: list[int] = []


def finite_windows(cols: dict[str, np.ndarray], names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[int]]:
    """``cols`` (column → [n] over positions, with ``window``) without the windows where any of ``names`` is NaN or
    infinite, and those windows' indices: a window with a bad value anywhere is reported and left out whole."""
    bad = np.zeros(cols["window"].shape, dtype=bool)  # [n]
    for name in names:
        bad |= ~np.isfinite(cols[name].astype(np.float64))
    windows = np.unique(cols["window"][bad])
    keep = ~np.isin(cols["window"], windows)
    return {name: values[keep] for name, values in cols.items()}, [int(w) for w in windows]


def mean_covariance(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The covariance of the means of the rows of ``x`` [k, n] over positions, with positions clustered by
    ``window`` [n]: the windows are the independent units (positions of one window share their context). [k, k].
    Cluster-robust (sandwich) form with the G/(G−1) small-sample factor: for windows of equal size the variance is
    the variance of the window means over G windows (``metrics.windows.mean_by_window``); for windows of one
    position each it is the usual s²/n. NaN with fewer than two windows."""
    n = x.shape[1]
    ids, inverse = np.unique(window, return_inverse=True)
    g = ids.size
    if g < 2:
        return np.full((x.shape[0], x.shape[0]), np.nan)
    centred = x - x.mean(axis=1, keepdims=True)  # [k, n]
    sums = np.stack([np.bincount(inverse, weights=row, minlength=g) for row in centred])  # [k, G]
    return (sums @ sums.T) / n**2 * (g / (g - 1))


def _mean_err(x: np.ndarray, window: np.ndarray) -> ValueErr:
    x = x.astype(np.float64)
    return ValueErr(value=float(x.mean()), err=float(math.sqrt(mean_covariance(x[None, :], window)[0, 0])))


def _percentiles(x: np.ndarray, which: tuple[float, ...]) -> dict[str, float]:
    return {f"{p:g}": float(np.percentile(x, p)) for p in which}


def summarize_corpus(
    *,
    kl: np.ndarray,
    kl_reverse: np.ndarray,
    logp_base: np.ndarray,
    logp_cand: np.ndarray,
    top_logp_base: np.ndarray,
    agree: np.ndarray,
    window: np.ndarray | None = None,
) -> CorpusSummary:
    """All arrays [n] over scored positions (natural logs); ``window`` [n] is each position's window. Every ``±``
    is a standard error that counts windows, the independent units (``mean_covariance``); without ``window`` each
    position is its own unit (too small an error bar for positions that share a context)."""
    n = int(kl.size)
    if n == 0:
        raise ValueError("no scored positions")
    unit = np.arange(n) if window is None else window
    nll_b, nll_c = -logp_base.astype(np.float64), -logp_cand.astype(np.float64)
    m_b, m_c = nll_b.mean(), nll_c.mean()
    cov = mean_covariance(np.stack([nll_b, nll_c]), unit)  # [2, 2], of the two means
    var_b, var_c, cov_bc = cov[0, 0], cov[1, 1], cov[0, 1]
    ppl_b, ppl_c = math.exp(m_b), math.exp(m_c)
    ratio = _mean_err(nll_c - nll_b, unit)  # ln(PPL_C / PPL_B)
    diff_var = ppl_c**2 * var_c + ppl_b**2 * var_b - 2 * ppl_c * ppl_b * cov_bc
    p_b, p_c = np.exp(logp_base.astype(np.float64)), np.exp(logp_cand.astype(np.float64))
    dp = p_c - p_b
    rms = math.sqrt(float((dp**2).mean()))
    # δ(RMS) from δ(mean of dp²), through d√x = dx / (2√x)
    rms_err = _mean_err(dp**2, unit).err / (2 * rms) if rms > 0 else float("nan")
    same = _mean_err((agree >= 1).astype(np.float64), unit)
    conf = np.exp(top_logp_base.astype(np.float64))
    buckets = []
    for low, high in itertools.pairwise(CONFIDENCE_EDGES):
        inside = (conf >= low) & ((conf < high) if high < 1 else (conf <= high))
        buckets.append(
            Bucket(low=low, high=high, n=int(inside.sum()), kl_mean=float(kl[inside].mean()) if inside.any() else None)
        )
    with np.errstate(invalid="ignore"):
        corr = float(np.corrcoef(nll_b, nll_c)[0, 1]) if n > 1 else float("nan")
    return CorpusSummary(
        n=n,
        ppl_base=ValueErr(value=ppl_b, err=ppl_b * math.sqrt(var_b)),
        ppl_cand=ValueErr(value=ppl_c, err=ppl_c * math.sqrt(var_c)),
        ln_ppl_ratio=ratio,
        ppl_ratio=ValueErr(value=math.exp(ratio.value), err=math.exp(ratio.value) * ratio.err),
        ppl_diff=ValueErr(value=ppl_c - ppl_b, err=math.sqrt(max(diff_var, 0.0))),
        ln_ppl_correlation=corr,
        kl_mean=_mean_err(kl, unit),
        kl_std=float(kl.std(ddof=1)) if n > 1 else float("nan"),
        kl_max=float(kl.max()),
        kl_min=float(kl.min()),
        kl_percentiles=_percentiles(kl, KL_PERCENTILES),
        kl_reverse_mean=_mean_err(kl_reverse, unit),
        dp_mean=_mean_err(dp, unit),
        dp_rms=ValueErr(value=rms, err=rms_err),
        dp_max=float(dp.max()),
        dp_min=float(dp.min()),
        dp_percentiles=_percentiles(dp, DP_PERCENTILES),
        same_top=same,
        topk_agreement={str(k): float((agree >= k).mean()) for k in range(1, 11)},
        kl_by_confidence=buckets,
    )
