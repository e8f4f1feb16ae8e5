"""metrics.calibration, metrics.student_t, metrics.screening and compress.size against independent references
(scipy's linregress and t quantiles, numpy, hand-worked cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from flipscope.metrics.calibration import (
    KL_FLOOR,
    CalibrationPair,
    fit,
    fit_without,
    log_mean_variance,
    predict,
)
from flipscope.metrics.screening import Screened, Verdict, pareto, verdicts
from flipscope.metrics.student_t import t_cdf, t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30, 500])
def test_student_t_matches_scipy(df: int) -> None:
    for q in (0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.001):
        assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-8, abs=1e-9)
    for t in (-5.0, -1.0, 0.0, 0.3, 2.5, 40.0):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)


def pairs_from(
    kls: list[float], flips: list[int], n: int = 40, groups: list[str] | None = None
) -> list[CalibrationPair]:
    names = groups or [f"c{i}" for i in range(len(kls))]
    return [CalibrationPair(k, f, n, g) for k, f, g in zip(kls, flips, names, strict=True)]


def reference(kls: list[float], flips: list[int], n: int, kl0: float, level: float = 0.95) -> tuple[float, ...]:
    """The fit and prediction interval written out with scipy alone."""
    x = np.log(np.array(kls) + KL_FLOOR)
    k = np.array(flips, dtype=float)
    y = np.log((k + 0.5) / (n - k + 0.5))
    reg = stats.linregress(x, y)
    m = len(x)
    resid = y - (reg.intercept + reg.slope * x)
    s = math.sqrt((resid**2).sum() / (m - 2))
    x0 = math.log(kl0 + KL_FLOOR)
    y0 = reg.intercept + reg.slope * x0
    half = (
        stats.t.ppf((1 + level) / 2, m - 2)
        * s
        * math.sqrt(1 + 1 / m + (x0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    )
    return reg.slope, reg.intercept, s, special.expit(y0), special.expit(y0 - half), special.expit(y0 + half)


def test_fit_and_prediction_interval_match_scipy_including_zero_kl_and_zero_flips() -> None:
    kls = [0.0, 2e-7, 1e-4, 3e-3, 0.02, 0.2, 1.1]  # an identical model, one under the floor, up to 2-bit
    flips = [0, 0, 1, 2, 5, 12, 22]  # of 40: zero flips where KL is nil
    line = fit(pairs_from(kls, flips))
    assert line is not None and line.pairs == 7
    for kl0 in (0.0, 5e-4, 0.05, 3.0):
        slope, intercept, s, point, low, high = reference(kls, flips, 40, kl0)
        assert (line.slope, line.intercept, line.resid_sd) == pytest.approx((slope, intercept, s), rel=1e-10)
        p = predict(line, kl0)
        assert (p.point, p.low, p.high) == pytest.approx((point, low, high), rel=1e-7)
        assert 0 < p.low < p.point < p.high < 1
    assert predict(line, 0.9, level=0.5).high < predict(line, 0.9, level=0.95).high  # a narrower level
    wider = predict(line, 0.01, kl_variance=0.5)  # a noisy new KL widens the interval, not the point
    plain = predict(line, 0.01)
    assert wider.point == pytest.approx(plain.point) and wider.low < plain.low and wider.high > plain.high


def test_a_prediction_interval_covers_new_observations_at_its_level() -> None:
    """On data drawn from the model (a line plus normal noise), 95% intervals cover ~95% of new points: the
    prediction interval, not the (far narrower) confidence interval of the line."""
    rng = np.random.default_rng(0)
    hits, trials = 0, 400
    for _ in range(trials):
        x = rng.uniform(-10, 0, 8)
        y = -1.0 + 0.5 * x + rng.normal(0, 0.4, 8)
        # turn (x, y) into pairs whose transforms are exactly x and y: n large, k chosen from y
        n = 10**9
        ks = n * special.expit(y)
        pairs = [CalibrationPair(math.exp(xi) - KL_FLOOR if math.exp(xi) > KL_FLOOR else 0.0, int(k), n, str(i))
                 for i, (xi, k) in enumerate(zip(x, ks, strict=True))]  # fmt: skip
        keep = [p for p in pairs if p.kl > 0]
        line = fit(keep)
        assert line is not None
        x0 = rng.uniform(-10, -1)
        y_new = -1.0 + 0.5 * x0 + rng.normal(0, 0.4)
        p = predict(line, math.exp(x0) - KL_FLOOR)
        hits += p.low <= special.expit(y_new) <= p.high
    assert 0.92 <= hits / trials <= 0.98


def test_too_few_pairs_or_one_kl_give_no_fit() -> None:
    assert fit(pairs_from([0.1, 0.2], [1, 2])) is None
    assert fit(pairs_from([0.1, 0.1, 0.1], [1, 2, 3])) is None
    assert fit(pairs_from([0.1, 0.2, float("nan"), 0.3], [1, 2, 3, 4])) is not None  # the NaN pair is left out
    assert fit(pairs_from([0.1, 0.2, float("nan")], [1, 2, 3])) is None


def test_leave_one_out_fits_without_the_candidates_own_pairs() -> None:
    # c3 sits far off the others' line: with its own pairs in the fit its prediction is pulled towards itself
    kls = [1e-4, 1e-3, 1e-2, 0.1, 1e-4, 1e-3, 1e-2, 0.1, 0.05, 0.05]
    flips = [1, 2, 4, 8, 1, 2, 4, 8, 39, 38]
    groups = ["c0", "c1", "c2", "c4", "c0", "c1", "c2", "c4", "c3", "c3"]
    pairs = pairs_from(kls, flips, groups=groups)
    without = fit_without(pairs, "c3")
    expected = fit([p for p in pairs if p.group != "c3"])
    assert without == expected and without is not None and without.pairs == 8
    held_out, seen = predict(without, 0.05), predict(fit(pairs), 0.05)  # type: ignore[arg-type]
    assert held_out.point < 0.3 < seen.point  # seen data inflates it towards c3's own 39/40
    assert fit_without(pairs, "nobody") == fit(pairs)


def test_log_mean_variance_is_the_delta_method() -> None:
    rng = np.random.default_rng(3)
    v = rng.exponential(0.01, 50)
    assert log_mean_variance(list(v)) == pytest.approx(v.var(ddof=1) / 50 / (v.mean() + KL_FLOOR) ** 2)
    assert log_mean_variance([0.1]) == 0.0


def test_pareto_and_run_fully() -> None:
    items = [
        Screened(0.01, 0.005, 0.02, size=8.5),  # big, few flips: on the set
        Screened(0.03, 0.02, 0.05, size=4.25),  # smaller, more flips: on the set
        Screened(0.04, 0.03, 0.06, size=4.5),  # larger and worse than the 4.25 one, intervals overlap: maybe
        Screened(0.30, 0.20, 0.40, size=4.5),  # larger and clearly worse: no
        Screened(0.20, 0.10, 0.30, size=2.25),  # smallest: on the set
        Screened(0.02, 0.01, 0.03, size=None),  # unknown size: no smaller than any; beaten by the 8.5 one
    ]
    assert pareto(items) == [True, True, False, False, True, False]
    assert verdicts(items) == [Verdict.YES, Verdict.YES, Verdict.MAYBE, Verdict.NO, Verdict.YES, Verdict.MAYBE]
    assert pareto([Screened(0.1, 0.0, 0.2), Screened(0.1, 0.0, 0.2)]) == [True, True]  # ties dominate nobody


def test_nominal_bits_from_compression_configs() -> None:
    from flipscope.compress import parse_method
    from flipscope.compress.size import nominal_bits

    assert nominal_bits((parse_method("rtn:w4g64"),)) == pytest.approx(4.25)
    assert nominal_bits((parse_method("rtn:w4g64,asym"),)) == pytest.approx(4 + 20 / 64)  # + a 4-bit zero per group
    assert nominal_bits((parse_method("awq:w4g128"),)) == pytest.approx(4 + 20 / 128)
    assert nominal_bits((parse_method("hqq:w4g64"),)) == pytest.approx(4.5)  # fp16 scale and zero
    assert nominal_bits((parse_method("rtn:w8"),)) == 8.0
    assert nominal_bits((parse_method("ggml:Q4_0"),)) == 4.5
    assert nominal_bits((parse_method("noise:0.01"),), "bfloat16") == 16.0
    assert nominal_bits((), "float32") == 32.0
    assert nominal_bits((parse_method("magnitude:0.5"),)) is None
