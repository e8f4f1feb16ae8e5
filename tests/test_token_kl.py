"""Token-level KL numerics against independent references (scipy), and the compact store's error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from flipscope.metrics.token_kl import compress_topk, kl_compact, kl_full, log1mexp


def random_logprobs(rng: np.random.Generator, t: int, v: int, scale: float = 3.0) -> np.ndarray:
    logits = rng.normal(size=(t, v)) * scale  # [T, V]
    return (logits - special.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)


def test_kl_full_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = random_logprobs(rng, 5, 50), random_logprobs(rng, 5, 50)
    expected = [stats.entropy(np.exp(a[i].astype(np.float64)), np.exp(b[i].astype(np.float64))) for i in range(5)]
    assert kl_full(a, b) == pytest.approx(expected, rel=1e-5)


def test_compact_with_full_k_is_exact() -> None:
    rng = np.random.default_rng(1)
    a, b = random_logprobs(rng, 4, 64), random_logprobs(rng, 4, 64)
    compact = compress_topk(a, 64)
    assert kl_compact(compact, b) == pytest.approx(kl_full(a, b), rel=1e-4, abs=1e-6)


def test_compact_is_a_lower_bound_and_tightens_with_k() -> None:
    rng = np.random.default_rng(2)
    a = random_logprobs(rng, 8, 500, scale=4.0)
    b = (a + rng.normal(size=a.shape).astype(np.float32) * 0.5).astype(np.float32)
    b = (b - special.logsumexp(b, axis=-1, keepdims=True)).astype(np.float32)
    exact = kl_full(a, b)
    previous = np.zeros_like(exact)
    for k in (4, 16, 64, 256, 500):
        approx = kl_compact(compress_topk(a, k), b)
        assert np.all(approx <= exact + 1e-5)
        assert np.all(approx >= previous - 1e-5)
        previous = approx
    assert previous == pytest.approx(exact, rel=1e-4)


def test_tail_samples_make_the_mean_unbiased() -> None:
    """A heavy tail (the case where top-k alone fails): the coarse bound falls far short, the sampled one does not."""
    rng = np.random.default_rng(5)
    a = random_logprobs(rng, 400, 2000, scale=1.0)  # flat: most mass outside any small head
    b = (a + rng.normal(size=a.shape).astype(np.float32) * 0.7).astype(np.float32)
    b = (b - special.logsumexp(b, axis=-1, keepdims=True)).astype(np.float32)
    exact = kl_full(a, b).mean()
    coarse = kl_compact(compress_topk(a, 32), b).mean()
    sampled = kl_compact(compress_topk(a, 32, samples=64, seed=0), b).mean()
    assert coarse < 0.5 * exact
    assert sampled == pytest.approx(exact, rel=0.03)


def test_tail_samples_come_from_outside_the_head_and_are_reproducible() -> None:
    rng = np.random.default_rng(6)
    a = random_logprobs(rng, 3, 300)
    c = compress_topk(a, 20, samples=16, seed=[4, 2])
    assert c.sample_ids.shape == (3, 16)
    for row in range(3):
        assert not set(c.sample_ids[row]) & set(c.ids[row])
    assert c.sample_logprobs == pytest.approx(np.take_along_axis(a, c.sample_ids.astype(np.int64), -1))
    again = compress_topk(a, 20, samples=16, seed=[4, 2])
    assert np.array_equal(c.sample_ids, again.sample_ids)
    assert compress_topk(a, 300, samples=16).sample_ids.shape == (3, 0)  # no tail to sample


def test_topk_rows_are_sorted_and_tail_is_the_rest() -> None:
    rng = np.random.default_rng(3)
    a = random_logprobs(rng, 3, 100)
    c = compress_topk(a, 10)
    assert c.ids.shape == (3, 10) and c.ids.dtype == np.int32
    assert np.all(np.diff(c.logprobs, axis=-1) <= 0)
    expected_tail = np.log(1 - np.exp(special.logsumexp(c.logprobs.astype(np.float64), axis=-1)))
    assert c.tail == pytest.approx(expected_tail, rel=1e-5)
    assert np.all(c.logprobs[:, 0] == a.max(axis=-1))


def test_log1mexp_accuracy_at_both_ends() -> None:
    x = np.array([-1e-10, -1e-3, -0.5, -1.0, -30.0])
    assert log1mexp(x) == pytest.approx(np.log(-np.expm1(x)), rel=1e-9)
