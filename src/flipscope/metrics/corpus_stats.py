"""Corpus statistics from per-position arrays, as llama.cpp's ``llama-perplexity --kl-divergence`` prints them and
beyond: perplexities with propagated uncertainty, KL(B‖C)'s mean, σ, extremes and percentiles, KL(C‖B)'s mean, Δp,
same-top rate, top-k agreement, KL by the baseline's confidence. Pure NumPy over stored arrays, so a run can be
re-summarised without a model. The statistics over positions (σ, extremes, percentiles) are only as exact as the
per-position KLs given: from a compact store those are estimates or bounds (``KLDSettings.kl_positions``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

#: Percentiles printed for KL and Δp, llama.cpp's set.
KL_PERCENTILES = (99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1)
DP_PERCENTILES = (99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1)
#: Bucket edges on the baseline's top probability.
CONFIDENCE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class ValueErr(BaseModel):
    value: float
    err: float


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


def _mean_err(x: np.ndarray) -> ValueErr:
    n = x.size
    return ValueErr(value=float(x.mean()), err=float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"))


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
) -> CorpusSummary:
    """All arrays [n] over scored positions (natural logs)."""
    n = int(kl.size)
    if n == 0:
        raise ValueError("no scored positions")
    nll_b, nll_c = -logp_base.astype(np.float64), -logp_cand.astype(np.float64)
    m_b, m_c = nll_b.mean(), nll_c.mean()
    cov = np.cov(nll_b, nll_c, ddof=1) if n > 1 else np.full((2, 2), np.nan)
    var_b, var_c, cov_bc = cov[0, 0] / n, cov[1, 1] / n, cov[0, 1] / n
    ppl_b, ppl_c = math.exp(m_b), math.exp(m_c)
    ratio = _mean_err(nll_c - nll_b)  # ln(PPL_C / PPL_B)
    diff_var = ppl_c**2 * var_c + ppl_b**2 * var_b - 2 * ppl_c * ppl_b * cov_bc
    p_b, p_c = np.exp(logp_base.astype(np.float64)), np.exp(logp_cand.astype(np.float64))
    dp = p_c - p_b
    rms = math.sqrt(float((dp**2).mean()))
    # δ(RMS) from δ(mean of dp²) = std(dp²)/√n, through d√x = dx / (2√x)
    rms_err = float((dp**2).std(ddof=1) / math.sqrt(n) / (2 * rms)) if n > 1 and rms > 0 else float("nan")
    same = float((agree >= 1).mean())
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
        kl_mean=_mean_err(kl.astype(np.float64)),
        kl_std=float(kl.std(ddof=1)) if n > 1 else float("nan"),
        kl_max=float(kl.max()),
        kl_min=float(kl.min()),
        kl_percentiles=_percentiles(kl, KL_PERCENTILES),
        kl_reverse_mean=_mean_err(kl_reverse.astype(np.float64)),
        dp_mean=_mean_err(dp),
        dp_rms=ValueErr(value=rms, err=rms_err),
        dp_max=float(dp.max()),
        dp_min=float(dp.min()),
        dp_percentiles=_percentiles(dp, DP_PERCENTILES),
        same_top=ValueErr(value=same, err=math.sqrt(same * (1 - same) / n)),
        topk_agreement={str(k): float((agree >= k).mean()) for k in range(1, 11)},
        kl_by_confidence=buckets,
    )
