"""The one KL module (metrics/kl.py) against independent references (scipy, brute force), for NumPy and torch
inputs, across the range users meet — including the near-zero KL of 8-bit candidates and of the noise floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special, stats

from flipscope.metrics.kl import bregman, compress, kl_compact, kl_exact, kl_terms, log1mexp


def random_logprobs(rng: np.random.Generator, t: int, v: int, scale: float = 3.0) -> np.ndarray:
    logits = rng.normal(size=(t, v)) * scale  # [T, V]
    return (logits - special.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)


def perturbed(rng: np.random.Generator, a: np.ndarray, sigma: float) -> np.ndarray:
    b = a.astype(np.float64) + rng.normal(size=a.shape) * sigma
    return (b - special.logsumexp(b, axis=-1, keepdims=True)).astype(np.float32)


def as_kind(x: np.ndarray, kind: str) -> np.ndarray | torch.Tensor:
    return torch.from_numpy(x) if kind == "torch" else x


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_exact_kl_both_ways_matches_scipy(kind: str) -> None:
    rng = np.random.default_rng(0)
    a, b = random_logprobs(rng, 40, 50), random_logprobs(rng, 40, 50)
    forward, reverse = kl_exact(as_kind(a, kind), as_kind(b, kind))
    pa, pb = np.exp(a.astype(np.float64)), np.exp(b.astype(np.float64))
    np.testing.assert_allclose(to_numpy(forward), [stats.entropy(pa[i], pb[i]) for i in range(40)], rtol=1e-9)
    np.testing.assert_allclose(to_numpy(reverse), [stats.entropy(pb[i], pa[i]) for i in range(40)], rtol=1e-9)


def test_exact_kl_keeps_its_accuracy_near_zero() -> None:
    """KL down to 1e-12 (far below the noise floor) against a float64 brute-force sum of p·log(p/q)."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 1000)) * 3
    for sigma in (1e-6, 1e-4, 1e-2):
        cand = base + rng.normal(size=base.shape) * sigma
        lb = base - special.logsumexp(base, axis=-1, keepdims=True)
        lc = cand - special.logsumexp(cand, axis=-1, keepdims=True)
        brute = np.array([stats.entropy(np.exp(lb[i]), np.exp(lc[i])) for i in range(6)])
        got = kl_exact(lb, lc)[0]
        assert np.all(got >= 0)
        np.testing.assert_allclose(got, brute, rtol=1e-3 if sigma > 1e-5 else 0.1)


def test_infinite_log_probabilities_never_give_nan() -> None:
    inf = np.inf
    lp = np.array([[np.log(0.5), np.log(0.5), -inf]])
    lq = np.array([[np.log(0.25), np.log(0.75), -inf]])
    assert kl_exact(lp, lq)[0][0] == pytest.approx(stats.entropy([0.5, 0.5, 0], [0.25, 0.75, 0]))
    # the candidate gives 0 where the baseline does not: KL(B‖C) is +inf, KL(C‖B) finite
    lq2 = np.array([[0.0, -inf, -inf]])
    forward, reverse = kl_exact(lp, lq2)
    assert forward[0] == np.inf and reverse[0] == pytest.approx(np.log(2))
    terms = kl_terms(np.array([-inf, -inf, -1.0, -1.0]), np.array([-inf, -2.0, -inf, -1.0]))
    assert terms[0] == 0 and terms[1] == pytest.approx(np.exp(-2.0)) and terms[2] == np.inf and terms[3] == 0
    assert bregman(np.array([-inf]))[0] == np.inf
    nan = kl_exact(np.array([[np.nan, 0.0]]), np.array([[-1.0, -1.0]]))[0]
    assert np.isnan(nan[0])  # a NaN log-prob is never hidden behind a clamp


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_compact_with_full_k_is_exact_both_ways(kind: str) -> None:
    rng = np.random.default_rng(2)
    a, b = random_logprobs(rng, 30, 64), random_logprobs(rng, 30, 64)
    got = kl_compact(compress(as_kind(a, kind), 64, samples=16), as_kind(b, kind))
    exact_f, exact_r = kl_exact(a, b)
    np.testing.assert_allclose(to_numpy(got.forward), exact_f, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(to_numpy(got.reverse), exact_r, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_compact_bounds_hold_and_tighten_with_k(kind: str) -> None:
    rng = np.random.default_rng(3)
    a = random_logprobs(rng, 50, 500, scale=2.0)
    b = perturbed(rng, a, 0.5)
    exact_f, exact_r = kl_exact(a, b)
    previous = np.zeros_like(exact_f)
    for k in (1, 4, 16, 64, 256):
        bound = kl_compact(compress(as_kind(a, kind), k), as_kind(b, kind))
        assert bound.forward_is_bound
        forward = to_numpy(bound.forward)
        assert np.all(forward <= exact_f + 1e-6) and np.all(forward >= previous - 1e-6)
        assert np.all(to_numpy(bound.reverse) <= exact_r + 1e-6)  # reverse: a bound with or without samples
        sampled = kl_compact(compress(as_kind(a, kind), k, samples=8), as_kind(b, kind))
        assert not sampled.forward_is_bound and np.all(to_numpy(sampled.reverse) <= exact_r + 1e-6)
        assert np.all(to_numpy(sampled.forward) >= 0)  # every term is non-negative: no clamp needed
        previous = forward


def test_tail_samples_come_from_outside_the_head_and_are_reproducible() -> None:
    rng = np.random.default_rng(4)
    a = random_logprobs(rng, 3, 300)
    c = compress(a, 20, samples=16, seed=42)
    assert c.sample_ids.shape == (3, 16) and c.ids.dtype == np.int32
    for row in range(3):
        assert not set(c.sample_ids[row]) & set(c.ids[row])
    np.testing.assert_allclose(c.sample_logprobs, np.take_along_axis(a, c.sample_ids.astype(np.int64), -1), atol=1e-6)
    assert np.array_equal(c.sample_ids, compress(a, 20, samples=16, seed=42).sample_ids)
    assert compress(a, 300, samples=16).sample_ids.shape == (3, 0)  # no tail to sample


def test_topk_rows_are_sorted_and_rest_is_the_remaining_mass() -> None:
    rng = np.random.default_rng(5)
    a = random_logprobs(rng, 3, 100)
    c = compress(a, 10)
    assert c.ids.shape == (3, 10) and np.all(np.diff(c.logprobs, axis=-1) <= 0)
    expected = np.log(1 - np.exp(special.logsumexp(c.logprobs.astype(np.float64), axis=-1)))
    np.testing.assert_allclose(c.rest, expected, rtol=1e-5)
    np.testing.assert_allclose(c.logprobs[:, 0], a.max(axis=-1), atol=1e-6)


def test_log1mexp_accuracy_at_both_ends() -> None:
    from decimal import Decimal, getcontext

    getcontext().prec = 50
    x = np.array([-1e-10, -1e-3, -0.5, -1.0, -30.0])
    reference = [float((1 - Decimal(float(v)).exp()).ln()) for v in x]  # 50 digits
    np.testing.assert_allclose(log1mexp(x), reference, rtol=1e-12)


# --- the acceptance test of the stored estimate's bias -------------------------------------------------------------

VOCAB = 50_000
POSITIONS = 16
SEEDS = 200
#: σ of the candidate's per-token log-prob perturbation, for true mean KL ≈ 1e-5 … 1.
LEVELS = {1e-5: 0.0045, 1e-4: 0.0141, 1e-3: 0.0447, 1e-2: 0.141, 0.1: 0.447, 1.0: 1.45}


def zipf_rows(rng: np.random.Generator) -> np.ndarray:
    """Baseline rows shaped like a language model's: Zipf-like with exponents that put 5–60% of the mass outside
    the top 64 tokens. → [POSITIONS, VOCAB] float32, normalised."""
    alpha = np.linspace(1.0, 1.75, POSITIONS)[:, None]  # [T, 1]
    logits = -alpha * np.log(np.arange(1, VOCAB + 1))[None, :] + rng.normal(size=(POSITIONS, VOCAB)) * 0.3
    logits = rng.permuted(logits, axis=-1)
    return (logits - special.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)


def test_stored_estimate_is_unbiased_from_1e5_to_1(record_property: pytest.FixtureRequest) -> None:
    """Over 200 seeds of the stored tail samples, the compact store's mean KL(B‖C) is within 2% of the exact mean
    (or 2e-7 absolute at the smallest), at every KL level, with tail masses 0.05–0.6."""
    rng = np.random.default_rng(7)
    base = zipf_rows(rng)
    cands = {level: perturbed(rng, base, sigma) for level, sigma in LEVELS.items()}
    exact = {level: kl_exact(base, c)[0] for level, c in cands.items()}  # [T] each
    tail = np.exp(compress(base, 64).rest.astype(np.float64))
    assert tail.min() < 0.1 and tail.max() > 0.5
    estimates: dict[float, list[np.ndarray]] = {level: [] for level in LEVELS}
    torch_base = torch.from_numpy(base)
    for seed in range(SEEDS):
        stored = compress(torch_base, 64, samples=64, seed=seed).numpy()
        for level, cand in cands.items():
            estimates[level].append(kl_compact(stored, cand).forward)
    for level in LEVELS:
        per_seed = np.stack(estimates[level])  # [S, T]
        true_mean, got_mean = float(exact[level].mean()), float(per_seed.mean())
        correlation = float(np.mean([np.corrcoef(row, exact[level])[0, 1] for row in per_seed]))
        record_property(f"kl_{level:g}", f"exact {true_mean:.4g} stored {got_mean:.4g} corr {correlation:.4f}")
        assert 0.5 * level < true_mean < 2 * level
        assert abs(got_mean - true_mean) <= max(0.02 * true_mean, 2e-7), (level, true_mean, got_mean)
        assert correlation > 0.9, (level, correlation)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_tiny_tail_masses_with_a_float32_normalisation_error(kind: str) -> None:
    """Rows whose top-64 hold all but ~1e-7 of the mass, the candidate's normalisation off by 1e-6 as a float32
    log-softmax leaves it (seen on SmolLM2): the candidate's tail is summed, never taken as 1 − Σ head, so the
    estimate stays at the exact value instead of blowing up by five orders of magnitude."""
    rng = np.random.default_rng(11)
    logits = np.full((8, 5000), -40.0) + rng.normal(size=(8, 5000))
    logits[:, :64] = rng.normal(size=(8, 64))  # the head: all but ~1e-14 … 1e-7 of the mass
    logits[:, 64:70] = -16.0 + rng.normal(size=(8, 6))  # a little tail mass
    base = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    cand = base + rng.normal(size=base.shape) * 0.01
    cand = cand - special.logsumexp(cand, axis=-1, keepdims=True) + 1e-6  # float32-like normalisation error
    base, cand = base.astype(np.float32), cand.astype(np.float32)
    stored = compress(as_kind(base, kind), 64, samples=32, seed=3)
    assert float(np.exp(to_numpy(stored.rest).astype(np.float64)).max()) < 1e-5
    exact = kl_exact(base, cand)[0]
    got = to_numpy(kl_compact(stored, as_kind(cand, kind)).forward)
    np.testing.assert_allclose(got, exact, rtol=0.05, atol=1e-8)


def test_two_level_tail_draws_follow_the_inverse_cdf() -> None:
    """The block-wise inverse CDF picks the token a full-row cumulative sum picks (numpy, brute force), never a
    zero-weight token (head or padding), on a vocabulary that is not a multiple of the block size."""
    from flipscope.metrics.kl import _in_blocks, _stratified

    rng = np.random.default_rng(3)
    weights = rng.exponential(size=(3, 1000)) * (rng.random((3, 1000)) > 0.3)  # [3, 1000], 30% zeros
    weights[1, 500:] = 0.0
    weights[2, :] *= 10.0 ** rng.uniform(-30, 0, size=1000)  # weights spanning 30 orders of magnitude
    fractions = (np.arange(4000) + rng.random(4000)) / 4000  # [4000]
    blocks = _in_blocks(torch.from_numpy(weights).float())
    sums = blocks.sum(-1).double()
    drawn = _stratified(blocks, sums, torch.from_numpy(np.tile(fractions, (3, 1)))).numpy()  # [3, 4000]
    for row in range(3):
        w = weights[row].astype(np.float32).astype(np.float64)
        cdf = np.cumsum(w)
        expected = np.searchsorted(cdf, fractions * cdf[-1], side="right")
        assert (w[drawn[row]] > 0).all()
        assert np.mean(drawn[row] == expected) > 0.999


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_compact_kl_takes_logits_as_it_takes_log_probabilities(kind: str) -> None:
    """Rows given as logits (each shifted by its own constant, as a model's head gives them) give the KL and the
    log-normaliser of the same rows given as float64-normalised log-probabilities; V = 5,000 > k."""
    rng = np.random.default_rng(3)
    n, v = 40, 5000
    base = special.log_softmax(rng.normal(size=(n, v)) * 3, axis=-1)
    cand = base + rng.normal(size=(n, v)) * 0.05
    shift = rng.normal(size=(n, 1)) * 30
    stored = compress(as_kind(base.astype(np.float32), kind), 64, samples=32, seed=1)
    logits, logprobs = cand + shift, special.log_softmax(cand, axis=-1)
    as_logits = kl_compact(stored, as_kind(logits.astype(np.float32), kind))
    as_logprobs = kl_compact(stored, as_kind(logprobs, kind))
    assert np.allclose(np.asarray(as_logits.forward), np.asarray(as_logprobs.forward), rtol=1e-4, atol=1e-9)
    assert np.allclose(np.asarray(as_logits.reverse), np.asarray(as_logprobs.reverse), rtol=1e-4, atol=1e-9)
    want_norm = special.logsumexp(logits.astype(np.float32).astype(np.float64), axis=-1)
    assert np.allclose(np.asarray(as_logits.log_norm), want_norm, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_a_tail_below_float32s_range_is_summed_not_taken_as_zero(kind: str) -> None:
    """A peaked row: the top token at 0, the rest at −120 … −130 (e^−120 ≈ 1e-52 underflows float32 relative to
    the top). The tail mass is still the masked row's own log-sum-exp, not −inf (which would make KL infinite)."""
    from flipscope.metrics.kl import log_norms

    rng = np.random.default_rng(4)
    rows = np.concatenate([np.zeros((3, 1)), -120 - 10 * rng.random((3, 999))], axis=1).astype(np.float32)
    ids = np.tile(np.arange(4), (3, 1))
    lse, rest = log_norms(as_kind(rows, kind), as_kind(ids, kind))
    want_rest = special.logsumexp(rows[:, 4:].astype(np.float64), axis=-1)
    assert np.isfinite(np.asarray(rest)).all()
    assert np.allclose(np.asarray(rest), want_rest, atol=1e-4)
    assert np.allclose(np.asarray(lse), special.logsumexp(rows.astype(np.float64), axis=-1), atol=1e-6)
    # most of the tail flushed to 0 but not all: one tail token at −100 (kept), 99,935 at −104 (flushed)
    partly = np.full((1, 100_000), -104.0, dtype=np.float32)
    partly[0, :64], partly[0, 0], partly[0, 64] = -1.0, 0.0, -100.0
    _, kept = log_norms(as_kind(partly, kind), as_kind(np.arange(64)[None], kind))
    assert np.allclose(np.asarray(kept), special.logsumexp(partly[0, 64:].astype(np.float64)), atol=1e-4)
    empty = np.full((1, 6), -np.inf, dtype=np.float32)
    empty[0, :2] = [0.0, -1.0]
    _, none = log_norms(as_kind(empty, kind), as_kind(np.array([[0, 1]]), kind))
    assert np.asarray(none)[0] == -np.inf  # nothing outside the ids: no tail mass, truly


def test_position_stats_take_logits_as_they_take_log_probabilities() -> None:
    """``kld`` hands the candidate's logits over unnormalised: every per-position number (KL both ways against a
    compact or a full baseline, the target's log-prob, top-10 agreement) is the one its log-probs give."""
    from flipscope.metrics.corpus_kl import position_stats

    rng = np.random.default_rng(5)
    n, v = 24, 3000
    base = torch.from_numpy(random_logprobs(rng, n, v))
    cand = torch.from_numpy(perturbed(rng, base.numpy(), 0.1))
    logits = cand + torch.from_numpy(rng.normal(size=(n, 1)).astype(np.float32) * 20)
    targets = torch.from_numpy(rng.integers(0, v, size=n))
    logp_b = base.gather(-1, targets[:, None])[:, 0]
    stored = compress(base, 32, samples=16, seed=2)
    for rows, topk in ((None, stored), (base, None)):
        a = position_stats(rows, topk, logits, targets, logp_b)
        b = position_stats(rows, topk, cand, targets, logp_b)
        for name in ("kl", "kl_reverse", "logp_cand"):
            assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-6), name
        assert torch.equal(a.agree, b.agree)
