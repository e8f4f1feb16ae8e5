"""Unit tests of the paired metrics on hand-made records, against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flipscope.metrics import (
    ItemScore,
    Pair,
    choice_kl,
    flip_counts,
    flips_by_margin,
    mcnemar_exact,
    pair_up,
    summarize,
    top_choice_share,
    top_margin,
    wilson_interval,
)
from flipscope.metrics.paired import quantile


def score(item: str, target: int, logprobs: tuple[float, ...], token_kl: float | None = None) -> ItemScore:
    return ItemScore("t", item, "s", target, logprobs, tuple(10 for _ in logprobs), token_kl)


def one_hot(choice: int, n: int = 4) -> tuple[float, ...]:
    return tuple(-1.0 if i == choice else -5.0 for i in range(n))


def pairs_from(base_choices: list[int], cand_choices: list[int], targets: list[int]) -> list[Pair]:
    return [
        Pair(score(str(i), t, one_hot(b)), score(str(i), t, one_hot(c)))
        for i, (b, c, t) in enumerate(zip(base_choices, cand_choices, targets, strict=True))
    ]


def test_flips_hand_computed() -> None:
    # items: 0 C→C, 1 C→I, 2 I→C, 3 I→I same wrong, 4 I→I other wrong, 5 C→I
    targets = [0, 0, 0, 0, 0, 1]
    base = [0, 0, 1, 2, 2, 1]
    cand = [0, 3, 0, 2, 3, 2]
    counts = flip_counts(pairs_from(base, cand, targets))
    assert (counts.c2i, counts.i2c, counts.changed, counts.n) == (2, 1, 4, 6)
    assert counts.flips == pytest.approx(3 / 6)
    assert counts.all_flips == pytest.approx(4 / 6)


def test_ties_choose_first_option() -> None:
    s = score("x", 1, (-2.0, -2.0, -3.0))
    assert s.choice == 0 and not s.correct
    assert top_margin((-2.0, -2.0, -3.0)) == pytest.approx(0.0)


def test_acc_norm_uses_option_length() -> None:
    s = ItemScore("t", "x", "s", 1, (-4.0, -6.0), (2, 6))
    assert s.choice == 0 and s.choice_norm == 1 and s.correct_norm


def test_wilson_matches_reference_values() -> None:
    lo, hi = wilson_interval(8, 10)  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo, hi = wilson_interval(0, 20)  # type: ignore[misc]
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) is None
    # scipy's binomtest offers Wilson too
    ci = stats.binomtest(37, 120).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(37, 120) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 0), (5, 5), (3, 12), (20, 7), (0, 9), (40, 61)])
def test_mcnemar_matches_scipy_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_choice_kl_matches_scipy_entropy() -> None:
    lb, lc = (-1.0, -2.0, -0.5, -3.0), (-1.5, -1.0, -0.7, -2.0)
    pb = np.exp(lb) / np.exp(lb).sum()
    pc = np.exp(lc) / np.exp(lc).sum()
    assert choice_kl(lb, lc) == pytest.approx(stats.entropy(pb, pc), rel=1e-9)
    assert choice_kl(lb, lb) == pytest.approx(0.0, abs=1e-12)


def test_top_margin_and_buckets() -> None:
    assert top_margin((math.log(0.7), math.log(0.2), math.log(0.1))) == pytest.approx(0.5)
    pairs = [
        Pair(score("a", 0, (math.log(0.5), math.log(0.45), math.log(0.05))), score("a", 0, one_hot(1, 3))),  # .05
        Pair(score("b", 0, (math.log(0.6), math.log(0.4), -50.0)), score("b", 0, one_hot(0, 3))),  # .2
        Pair(score("c", 0, (0.0, -50.0, -50.0)), score("c", 0, one_hot(2, 3))),  # 1.0
    ]
    buckets = flips_by_margin(pairs)
    assert [(b.n, b.flips) for b in buckets] == [(1, 1), (1, 0), (0, 0), (1, 1)]
    assert buckets[2].rate is None


def test_summary_all_same_answers_warns_about_collapse() -> None:
    n = 25
    pairs = pairs_from([0] * n, [0] * n, [i % 4 for i in range(n)])
    s = summarize(pairs)
    assert s.acc_baseline == pytest.approx(7 / 25) and s.flips == 0 and s.all_flips == 0
    assert s.mcnemar_p == 1.0 and s.choice_kl_mean == pytest.approx(0.0, abs=1e-12)
    assert top_choice_share([p.baseline.choice for p in pairs]) == (0, 1.0)
    assert any("collapse" in w and "baseline" in w for w in s.warnings)
    assert any("candidate" in w for w in s.warnings)


def test_summary_empty_input() -> None:
    s = summarize([])
    assert s.n == 0 and s.acc_baseline is None and s.flips is None and s.delta_acc is None
    assert s.mcnemar_p == 1.0 and s.choice_kl_mean is None and s.token_kl_mean is None


def test_summary_hand_computed() -> None:
    targets = [0, 0, 0, 0, 0, 1]
    pairs = pairs_from([0, 0, 1, 2, 2, 1], [0, 3, 0, 2, 3, 2], targets)
    pairs = [Pair(p.baseline, ItemScore(**{**p.candidate.__dict__, "token_kl": 0.1 * i})) for i, p in enumerate(pairs)]
    s = summarize(pairs)
    assert s.n == 6
    assert s.acc_baseline == pytest.approx(3 / 6) and s.acc_candidate == pytest.approx(2 / 6)
    assert s.delta_acc == pytest.approx(-1 / 6)
    assert (s.flips_c2i, s.flips_i2c) == (2, 1)
    assert s.mcnemar_p == pytest.approx(stats.binomtest(2, 3).pvalue)
    assert s.token_kl_mean == pytest.approx(np.mean([0.1 * i for i in range(6)]))
    kls = [choice_kl(p.baseline.logprobs, p.candidate.logprobs) for p in pairs]
    assert s.choice_kl_mean == pytest.approx(np.mean(kls))
    assert s.choice_kl_median == pytest.approx(np.median(kls))
    assert s.choice_kl_p95 == pytest.approx(np.quantile(kls, 0.95))


def test_token_kl_is_missing_when_any_item_lacks_it() -> None:
    pairs = pairs_from([0, 1], [0, 1], [0, 1])
    s = summarize(pairs)
    assert s.token_kl_mean is None and s.token_kl_items == 0
    assert any("token KL missing" in w for w in s.warnings)


def test_quantile_matches_numpy() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    for q in (0.0, 0.1, 0.5, 0.95, 1.0):
        assert quantile(values, q) == pytest.approx(np.quantile(values, q))
    assert quantile([], 0.5) is None


def test_pair_up_rejects_unmatched_items() -> None:
    with pytest.raises(ValueError, match="no baseline"):
        pair_up([score("a", 0, (0.0, -1.0))], [score("b", 0, (0.0, -1.0))])


def test_judge_free_distances_by_hand() -> None:
    from flipscope.metrics import FreeAnswer, ItemScore, Pair, answer_distance
    from flipscope.metrics.records import first_divergence

    assert first_divergence((1, 2, 3), (1, 2, 4)) == 2
    assert first_divergence((1, 2), (1, 2, 3)) == 2 and first_divergence((5,), (5,)) is None
    assert first_divergence((), (7,)) == 0

    def free(text: str, answer: str, ids: tuple[int, ...] | None, lp: float | None, n: int | None) -> FreeAnswer:
        return FreeAnswer(text, answer, False, False, "stop", len(text), ids, lp, n)

    base = ItemScore("gsm8k", "1", "", 0, (), free=free("a b c", "3", (1, 2, 3), -6.0, 3))
    cand = ItemScore("gsm8k", "1", "", 0, (), token_kl=0.25, free=free("a b d", "3", (1, 2, 9), -7.5, None))
    d = answer_distance(Pair(base, cand))
    assert d is not None and d.teacher_kl == 0.25 and d.delta_nll == 0.5 and d.first_divergence == 2
    assert d.same_answer and not d.identical
    # two "[invalid]": the same (non-)answer, as all-flips counts them (metrics.same_answer)
    same = ItemScore("gsm8k", "1", "", 0, (), free=free("a b c", "[invalid]", None, -6.0, None))
    d2 = answer_distance(
        Pair(ItemScore("gsm8k", "1", "", 0, (), free=free("a b c", "[invalid]", None, None, None)), same)
    )
    assert d2 is not None and d2.identical and d2.first_divergence is None and d2.same_answer and d2.delta_nll is None


@pytest.mark.parametrize("seed", range(6))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    from scipy import stats

    from flipscope.metrics.paired import spearman

    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    xs = list(rng.integers(0, 4, n).astype(float))  # ties on purpose
    ys = list(rng.normal(size=n))
    expected = stats.spearmanr(xs, ys).statistic
    got = spearman(xs, ys)
    if np.isnan(expected):
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)
    assert spearman([1.0], [2.0]) is None and spearman([1.0, 1.0], [1.0, 2.0]) is None
