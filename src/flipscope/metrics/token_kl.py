"""Answer-token KL over the full vocabulary, and the compact top-k + tail form the baseline is stored in.

The baseline keeps, per answer token, its k largest log-probabilities, their token ids, and the log of the
remaining probability mass. Against it, a candidate's full row gives the coarse-grained KL over
top-k ∪ {rest}: a lower bound of the true KL, short of it by p_B(rest) · KL(B‖C restricted to the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default number of baseline log-probabilities kept per answer token.
DEFAULT_TOPK = 128


@dataclass(frozen=True)
class CompactRows:
    """Top-k rows of T answer tokens. ids: [T, k] int32; logprobs: [T, k] float32; tail: [T] float32 = log p(rest)."""

    ids: np.ndarray
    logprobs: np.ndarray
    tail: np.ndarray

    def __len__(self) -> int:
        return int(self.tail.shape[0])


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


def compress_topk(logprobs: np.ndarray, k: int) -> CompactRows:
    """logprobs: [T, V] normalised log-probabilities → top-k ids and values plus the tail's log-mass."""
    k = min(k, logprobs.shape[-1])
    ids = np.argpartition(logprobs, -k, axis=-1)[:, -k:]  # [T, k], unordered
    top = np.take_along_axis(logprobs, ids, axis=-1)  # [T, k]
    order = np.argsort(-top, axis=-1)
    ids = np.take_along_axis(ids, order, axis=-1)
    top = np.take_along_axis(top, order, axis=-1)
    tail = log1mexp(logsumexp(top.astype(np.float64), axis=-1))  # [T]
    return CompactRows(ids.astype(np.int32), top.astype(np.float32), tail.astype(np.float32))


def kl_full(base: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact KL(B‖C) per row. base, cand: [T, V] log-probabilities → [T]."""
    b = base.astype(np.float64)
    p = np.exp(b)
    return np.maximum(np.sum(p * (b - cand.astype(np.float64)), axis=-1), 0.0)


def kl_compact(base: CompactRows, cand: np.ndarray) -> np.ndarray:
    """Coarse-grained KL(B‖C) over B's top-k ∪ {rest}. cand: [T, V] log-probabilities → [T]."""
    lb = base.logprobs.astype(np.float64)  # [T, k]
    lc = np.take_along_axis(cand, base.ids.astype(np.int64), axis=-1).astype(np.float64)  # [T, k]
    head = np.sum(np.exp(lb) * (lb - lc), axis=-1)  # [T]
    tail_b = base.tail.astype(np.float64)  # [T]
    # Rounding can put the candidate's head mass at or above 1; keep its tail finite (≥ 1e-12).
    tail_c = log1mexp(np.minimum(logsumexp(lc, axis=-1), -1e-12))  # [T]
    with np.errstate(invalid="ignore"):
        rest = np.where(np.isfinite(tail_b), np.exp(tail_b) * (tail_b - tail_c), 0.0)
    return np.maximum(head + rest, 0.0)


def concat_rows(rows: list[CompactRows], k: int) -> CompactRows:
    if not rows:
        return CompactRows(np.zeros((0, k), np.int32), np.zeros((0, k), np.float32), np.zeros((0,), np.float32))
    return CompactRows(
        np.concatenate([r.ids for r in rows]),
        np.concatenate([r.logprobs for r in rows]),
        np.concatenate([r.tail for r in rows]),
    )
