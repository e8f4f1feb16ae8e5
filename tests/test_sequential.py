"""The confidence sequence for a flip rate: the mixture martingale against an independent integral, the interval's
edges, and the guarantee under look-after-every-chunk stopping — which a fixed-n Wilson interval re-checked at each
look fails on the same streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from flipscope.metrics.sequential import PRIOR, Decision, Question, confidence_sequence, decide, excludes, log_mixture


@pytest.mark.parametrize(
    ("s", "n", "p"), [(0, 10, 0.05), (3, 10, 0.3), (7, 200, 0.01), (150, 400, 0.5), (2, 5000, 0.002)]
)
def test_mixture_equals_the_integral_of_the_likelihood_ratio_over_the_prior(s: int, n: int, p: float) -> None:
    prior = stats.beta(*PRIOR)

    def integrand(q: float) -> float:
        return float(prior.pdf(q) * math.exp(stats.binom.logpmf(s, n, q) - stats.binom.logpmf(s, n, p)))

    ratio, _ = integrate.quad(integrand, 0, 1, points=[s / n], limit=200)
    assert float(log_mixture(p, s, n)) == pytest.approx(math.log(ratio), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(("s", "n"), [(0, 50), (1, 50), (5, 100), (40, 100), (100, 100), (12, 3000)])
def test_interval_edges_are_where_the_martingale_reaches_one_over_alpha(s: int, n: int) -> None:
    alpha = 0.05
    low, high = confidence_sequence(s, n, alpha)
    assert low <= s / n <= high
    for edge, inside in ((low, low + 1e-6), (high, high - 1e-6)):
        if 0 < edge < 1:
            assert float(log_mixture(edge, s, n)) == pytest.approx(math.log(1 / alpha), abs=1e-6)
            assert not excludes(inside, s, n, alpha)
    grid = np.linspace(1e-4, 1 - 1e-4, 400)
    outside = (grid < low) | (grid > high)
    assert np.array_equal(np.array([bool(excludes(q, s, n, alpha)) for q in grid]), outside)


def wilson(s: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    z = stats.norm.ppf(1 - alpha / 2)
    phat = s / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_wider_than_wilson_at_every_n() -> None:
    s, n = np.array([0, 3, 10, 50, 120]), np.array([40, 40, 200, 400, 1000])
    w_low, w_high = wilson(s, n, 0.05)
    for i in range(len(s)):
        low, high = confidence_sequence(int(s[i]), int(n[i]), 0.05)
        assert high - low > w_high[i] - w_low[i]


def test_deciding_after_every_chunk_errs_at_most_alpha_where_rechecked_wilson_does_not() -> None:
    """1,000 streams whose true flip rate equals the budget: any decision (below or above) is wrong. Looking after
    every chunk of 20 items up to 2,000, the confidence sequence decides wrongly in at most α of them; Wilson's
    interval checked at the same looks does in far more."""
    alpha, budget, streams, chunk, items = 0.05, 0.10, 1000, 20, 2000
    rng = np.random.default_rng(0)
    flips = rng.random((streams, items)) < budget
    looks = np.arange(chunk, items + 1, chunk)
    counts = np.cumsum(flips, axis=1)[:, looks - 1]  # (streams, looks): flips seen at each look
    n = np.broadcast_to(looks, counts.shape)
    wrong_cs = excludes(budget, counts, n, alpha).any(axis=1)
    w_low, w_high = wilson(counts, n, alpha)
    wrong_wilson = ((w_low > budget) | (w_high < budget)).any(axis=1)
    assert wrong_cs.mean() <= alpha
    assert wrong_wilson.mean() > 3 * alpha  # the bug this guards against shows: optional stopping breaks Wilson


def test_decide_reads_the_interval() -> None:
    budget = Question(alpha=0.05, budget=0.05)
    assert decide(2, 400, budget).decision is Decision.BELOW
    assert decide(60, 400, budget).decision is Decision.ABOVE
    state = decide(20, 400, budget)
    assert state.decision is Decision.UNDECIDED and state.interval[0] < 0.05 < state.interval[1]


def test_decide_against_a_floor_and_a_precision() -> None:
    floor = Question(alpha=0.025, floor_high=0.04)
    assert decide(40, 400, floor).decision is Decision.ABOVE  # lower bound ≈ 6% > 4%
    assert decide(1, 400, floor).decision is Decision.WITHIN_FLOOR  # upper bound ≈ 2% ≤ 4%
    assert decide(12, 400, floor).decision is Decision.UNDECIDED  # 3%: the interval straddles 4%
    wide = decide(10, 100, Question(alpha=0.05, precision=0.02))
    assert wide.decision is Decision.UNDECIDED and (wide.interval[1] - wide.interval[0]) / 2 > 0.02
    narrow = decide(50, 5000, Question(alpha=0.05, precision=0.02))
    assert narrow.decision is Decision.PRECISE and (narrow.interval[1] - narrow.interval[0]) / 2 <= 0.02


def test_a_question_asks_one_thing() -> None:
    with pytest.raises(ValueError, match="one question"):
        Question(alpha=0.05, budget=0.05, precision=0.01)
    with pytest.raises(ValueError, match="alpha"):
        Question(alpha=1.5, budget=0.05)


def test_the_mixture_equals_howard_and_ramdas_confseq() -> None:
    """confseq (Howard & Ramdas' own package, built in CI from its sdist) computes the two-sided beta-binomial
    mixture with g = p, h = 1 − p: that is ``log_mixture`` with the Beta(r/(1−p), r/p) prior its ``v_opt`` and
    ``alpha_opt`` choose (r from its normal-mixture rule). Equal from rare flips (p = 0.001) to even ones, n = 1 to
    10,000, no flip to all flips."""
    boundaries = pytest.importorskip("confseq.boundaries", reason="confseq is built and installed by .ci/run")
    level = math.log(1 / 0.05)
    for p in (0.001, 0.01, 0.05, 0.2, 0.5, 0.9):
        v_opt = p * (1 - p) * 100
        rho = v_opt / (2 * level + math.log(1 + 2 * level))  # confseq's TwoSidedNormalMixture::best_rho
        r = max(rho - p * (1 - p), 1e-3 * p * (1 - p))
        for n in (1, 10, 100, 1000, 10_000):
            for k in sorted({0, 1, n // 20, n // 2, n}):
                ours = float(log_mixture(p, k, n, prior=(r / (1 - p), r / p)))
                theirs = boundaries.beta_binomial_log_mixture(k - p * n, p * (1 - p) * n, v_opt, p, 1 - p, 0.05, False)
                assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9), (p, n, k)
