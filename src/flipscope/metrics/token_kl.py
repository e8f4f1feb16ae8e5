"""Answer-token KL over the full vocabulary, and the compact form the baseline is stored in.

Per answer token the baseline keeps its k largest log-probabilities with their token ids, the log of the
remaining ("tail") mass, and m tail tokens drawn by stratified sampling in proportion to p_B (with their
log-probabilities). Against a candidate's full row this gives

    KL(B‖C) = Σ_head p_B (log p_B − log p_C)  +  P_B (log P_B − log P_C)  +  P_B · KL(B_tail‖C_tail)

exactly in its first two terms (the coarse-grained KL over top-k ∪ {rest}, a lower bound), and the third
estimated without bias from the samples: the mean of (log p_B(v) − log P_B) − (log p_C(v) − log P_C) over them.
Measured on SmolLM2-135M vs RTN candidates (1,016 answer tokens): the coarse bound alone falls 7–10% short at
k = 128; with 64 tail samples the mean is within 1% of the exact value (see tests/test_e2e.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default number of baseline log-probabilities kept per answer token.
DEFAULT_TOPK = 128
#: Default number of tail tokens sampled per answer token.
DEFAULT_TAIL_SAMPLES = 64


@dataclass(frozen=True)
class CompactRows:
    """T answer tokens. ids, logprobs: [T, k] int32 / float32; tail: [T] float32 = log P(rest);
    sample_ids, sample_logprobs: [T, m] — tail tokens drawn ∝ p_B, and their baseline log-probabilities."""

    ids: np.ndarray
    logprobs: np.ndarray
    tail: np.ndarray
    sample_ids: np.ndarray
    sample_logprobs: np.ndarray

    def __len__(self) -> int:
        return int(self.tail.shape[0])

    def slice(self, start: int, end: int) -> CompactRows:
        return CompactRows(
            self.ids[start:end],
            self.logprobs[start:end],
            self.tail[start:end],
            self.sample_ids[start:end],
            self.sample_logprobs[start:end],
        )


def log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 − exp(x)) for x ≤ 0, accurate at both ends; −inf at x = 0."""
    x = np.minimum(x, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(x > -0.6931, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def sample_tail(logprobs: np.ndarray, head_ids: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """m stratified draws per row from p restricted to outside ``head_ids``. logprobs: [T, V] → [T, m] int64."""
    t, v = logprobs.shape
    p = np.exp(logprobs.astype(np.float64))  # [T, V]
    np.put_along_axis(p, head_ids.astype(np.int64), 0.0, axis=-1)
    cdf = np.cumsum(p, axis=-1)  # [T, V]
    out = np.zeros((t, m), np.int64)
    for row in range(t):
        if cdf[row, -1] <= 0:
            continue  # no tail: the head holds the whole vocabulary
        u = (np.arange(m) + rng.random(m)) / m * cdf[row, -1]
        out[row] = np.minimum(np.searchsorted(cdf[row], u, side="right"), v - 1)
    return out


def compress_topk(logprobs: np.ndarray, k: int, samples: int = 0, seed: int | list[int] = 0) -> CompactRows:
    """logprobs: [T, V] normalised log-probabilities → head (top-k), tail log-mass and ``samples`` tail draws."""
    k = min(k, logprobs.shape[-1])
    ids = np.argpartition(logprobs, -k, axis=-1)[:, -k:]  # [T, k], unordered
    top = np.take_along_axis(logprobs, ids, axis=-1)  # [T, k]
    order = np.argsort(-top, axis=-1)
    ids = np.take_along_axis(ids, order, axis=-1)
    top = np.take_along_axis(top, order, axis=-1)
    tail = log1mexp(logsumexp(top.astype(np.float64), axis=-1))  # [T]
    m = samples if k < logprobs.shape[-1] else 0
    drawn = sample_tail(logprobs, ids, m, np.random.default_rng(seed))  # [T, m]
    return CompactRows(
        ids.astype(np.int32),
        top.astype(np.float32),
        tail.astype(np.float32),
        drawn.astype(np.int32),
        np.take_along_axis(logprobs, drawn, axis=-1).astype(np.float32),
    )


def kl_full(base: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact KL(B‖C) per row. base, cand: [T, V] log-probabilities → [T]."""
    b = base.astype(np.float64)
    p = np.exp(b)
    return np.maximum(np.sum(p * (b - cand.astype(np.float64)), axis=-1), 0.0)


def kl_compact(base: CompactRows, cand: np.ndarray) -> np.ndarray:
    """KL(B‖C) per row from the compact baseline and the candidate's full rows [T, V] → [T].

    Without tail samples this is the coarse-grained lower bound; with them, an estimate whose mean is unbiased.
    """
    lb = base.logprobs.astype(np.float64)  # [T, k]
    lc = np.take_along_axis(cand, base.ids.astype(np.int64), axis=-1).astype(np.float64)  # [T, k]
    head = np.sum(np.exp(lb) * (lb - lc), axis=-1)  # [T]
    tail_b = base.tail.astype(np.float64)  # [T]
    # Rounding can put the candidate's head mass at or above 1; keep its tail finite (≥ 1e-12).
    tail_c = log1mexp(np.minimum(logsumexp(lc, axis=-1), -1e-12))  # [T]
    finite = np.isfinite(tail_b)
    mass_b = np.where(finite, np.exp(np.where(finite, tail_b, 0.0)), 0.0)  # [T]
    rest = np.where(finite, mass_b * (np.where(finite, tail_b, 0.0) - tail_c), 0.0)
    coarse = np.maximum(head + rest, 0.0)
    if base.sample_ids.shape[-1] == 0:
        return coarse
    sb = base.sample_logprobs.astype(np.float64)  # [T, m]
    sc = np.take_along_axis(cand, base.sample_ids.astype(np.int64), axis=-1).astype(np.float64)  # [T, m]
    log_ratio = (sb - np.where(finite, tail_b, 0.0)[:, None]) - (sc - tail_c[:, None])
    within = np.mean(log_ratio, axis=-1)  # [T], estimates KL(B_tail‖C_tail)
    return coarse + mass_b * within


def concat_rows(rows: list[CompactRows]) -> CompactRows:
    return CompactRows(
        *(
            np.concatenate([getattr(r, f) for r in rows])
            for f in ("ids", "logprobs", "tail", "sample_ids", "sample_logprobs")
        )
    )
