"""KL divergence between a baseline's and a candidate's next-token distributions — the one implementation behind
answer-token KL (``compare``), corpus KL (``kld``) and choice KL.

Every function takes NumPy arrays or torch tensors (on any device) and returns the same kind; torch is imported
only when a tensor is given.

**Exact** (both sides' full rows): both rows are renormalised in float64, and KL is summed from per-token terms

    p_B · ((r − 1) − log r),   r = p_C / p_B,

each ≥ 0 (Σ p_B (r − 1) = 0, so the sum is KL). Non-negative terms need no clamp (a clamp biases the mean of
near-zero KLs upwards) and keep their accuracy where KL is tiny (expm1 near r = 1). Log-probabilities of −inf
give 0 (p_B = 0) or +inf (p_C = 0 < p_B), never NaN; a NaN input stays NaN.

**Compact** (the baseline stored as its top-k log-probs, the log of its remaining mass P_B, and m tail tokens drawn
∝ p_B outside the top-k; the candidate's full row). With the candidate's rest mass P_C = Σ_tail p_C,

    KL(B‖C) = Σ_head p_B (log p_B − log p_C) + P_B (log P_B − log P_C) + P_B · KL(B̃‖C̃)

where B̃, C̃ are the two distributions renormalised over the tail. The first two terms are the KL over the
partition top-k ∪ {rest} (a lower bound by the log-sum inequality), computed exactly with the same non-negative
terms. The third is estimated from the samples v_j ~ B̃ (stratified along B̃'s CDF, which keeps the mean unbiased) by

    mean_j ((r_j − 1) − log r_j),   r_j = C̃(v_j) / B̃(v_j).

E[r] = Σ_tail C̃ = 1 under B̃, so this mean is an unbiased estimate of KL(B̃‖C̃), and every term is ≥ 0: no clamp,
hence no upward bias at the KLs of 8-bit candidates and of the noise floor (1e-6 … 1e-3). Compared with the plain
mean of −log r (also unbiased), the (r − 1) control variate removes the first-order noise, so its variance is far
smaller when C is close to B. P_C is summed over the tail tokens (never 1 − Σ_head, see ``log_norms``); a row whose
normalisation is off by η (float32) gives every bucket the same factor 1 + η, which the terms' Σ (p_C − p_B)
cancels.

KL(C‖B) from the compact form is only the partition term — a **lower bound** — and so is KL(B‖C) without tail
samples; ``CompactKL`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Default number of baseline log-probabilities kept per answer token (compare).
DEFAULT_TOPK = 128
#: Default number of tail tokens sampled per answer token (compare).
DEFAULT_TAIL_SAMPLES = 64
#: Rows processed together by the exact and compact functions (bounds float64 temporaries to rows × V × 8 bytes).
BLOCK_ROWS = 32

Array = Any  # numpy.ndarray or torch.Tensor


def _is_torch(x: Array) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _xp(x: Array) -> Any:
    if _is_torch(x):
        import torch

        return torch
    return np


def _f64(x: Array) -> Array:
    return x.double() if _is_torch(x) else np.asarray(x, dtype=np.float64)


def logsumexp(x: Array) -> Array:
    """log Σ exp over the last axis; −inf for an all −inf row. [..., V] → [...]."""
    if _is_torch(x):
        import torch

        return torch.logsumexp(x, dim=-1)
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, -1) + np.log(np.sum(np.exp(x - top), axis=-1))


def log1mexp(x: Array) -> Array:
    """log(1 − exp(x)) for x ≤ 0, accurate at both ends; −inf at x = 0."""
    xp = _xp(x)
    x = xp.where(x > 0, 0.0, x)
    with np.errstate(divide="ignore"):
        return xp.where(x > -0.6931, xp.log(-xp.expm1(x)), xp.log1p(-xp.exp(x)))


def gather(rows: Array, ids: Array) -> Array:
    """rows[i, ids[i, j]]. rows: [n, V]; ids: [n, j] → [n, j]."""
    if _is_torch(rows):
        return rows.gather(-1, ids.long())
    return np.take_along_axis(rows, ids.astype(np.int64), axis=-1)


def bregman(x: Array) -> Array:
    """(e^x − 1) − x ≥ 0 elementwise: the KL contribution of one token per unit p_B at log r = x; +inf at −inf."""
    xp = _xp(x)
    return xp.expm1(x) - x


def kl_terms(lp: Array, lq: Array) -> Array:
    """Per-token p·((r − 1) − log r), r = q/p, from log-probabilities (float64 recommended); each ≥ 0.
    p = 0 gives q; q = 0 < p gives +inf; NaN stays NaN. lp, lq: same shape → same shape."""
    xp = _xp(lp)
    p = xp.exp(lp)
    with np.errstate(invalid="ignore"):
        x = lq - lp  # log r; NaN where both are −inf (handled by p = 0 below)
        big = x > 30  # e^x would lose p's precision: use q − p − p·x directly
        small_x = xp.where(big, 0.0, x)
        term = xp.where(big, xp.exp(lq) - p * (1 + xp.where(big, x, 0.0)), p * bregman(small_x))
        return xp.where(p == 0, xp.exp(lq), term)


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(s, min(s + BLOCK_ROWS, n)) for s in range(0, n, BLOCK_ROWS)] or [(0, 0)]


def _cat(parts: list[Array], like: Array) -> Array:
    if _is_torch(like):
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def log_norms(rows: Array, ids: Array) -> tuple[Array, Array]:
    """Each row's log-normaliser and the log of its mass outside ``ids``, float64: (log Σ_V e^x, log Σ_{v∉ids}
    e^x). rows: [n, V] scores (log-probabilities, or logits: any per-row constant); ids: [n, k] → ([n], [n]).

    One pass of exp over the rows, shifted by each row's maximum; the tail is summed over the tail tokens
    themselves (the ids' terms set to 0 in that temporary), never as 1 − Σ_head: a float32 row's normalisation is
    off by ~1e-6, which swamps a tail mass below that — seen on SmolLM2 at positions whose top-64 hold all but
    3e-7 of the mass, where the subtraction made the candidate's tail 1e-12 and the estimate 0.12 instead of 5e-6.
    A tail below 1e-25 of the row's top token (where float32's e^(x − max) flushes terms below e^−87 to 0: a
    peaked row) is summed again from the masked row's own maximum, so it is never taken as 0 or too small."""
    xp = _xp(rows)
    torch_rows = _is_torch(rows)
    top = rows.amax(-1) if torch_rows else np.max(rows, axis=-1)  # [n]
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    e: Any = rows - top[:, None]  # [n, V], the one temporary (the rows' dtype), exponentiated in place
    if torch_rows:
        e.exp_()
    else:
        np.exp(e, out=e)
    head = _f64(gather(e, ids)).sum(-1)  # [n]
    if torch_rows:
        e.scatter_(-1, ids.long(), 0.0)
    else:
        np.put_along_axis(e, ids.astype(np.int64), 0.0, axis=-1)
    tail = _f64(e.sum(-1))  # summed in the rows' dtype (pairwise): relative error ~1e-6 of the tail itself
    top = _f64(top)
    with np.errstate(divide="ignore"):
        lse, rest = top + xp.log(head + tail), top + xp.log(tail)
    # a tail made of tokens below e^−87 of the top (flushed to 0 in float32): summed again from the masked row
    lost = tail < 1e-25
    if bool(lost.any()):
        masked: Any = rows[lost].clone() if torch_rows else np.array(rows[lost], copy=True)
        if torch_rows:
            masked.scatter_(-1, ids[lost].long(), float("-inf"))
        else:
            np.put_along_axis(masked, ids[lost].astype(np.int64), -np.inf, axis=-1)
        rest[lost] = _f64(logsumexp(masked))
    return lse, rest


def kl_exact(base: Array, cand: Array) -> tuple[Array, Array]:
    """Exact (KL(B‖C), KL(C‖B)) per row, float64. base, cand: [n, V] log-probabilities → ([n], [n])."""
    forward, reverse = [], []
    for s, e in _blocks(base.shape[0]):
        lb, lc = _f64(base[s:e]), _f64(cand[s:e])  # [b, V]
        lb = lb - logsumexp(lb)[:, None]
        lc = lc - logsumexp(lc)[:, None]
        forward.append(kl_terms(lb, lc).sum(-1))
        reverse.append(kl_terms(lc, lb).sum(-1))
    return _cat(forward, base), _cat(reverse, base)


@dataclass(frozen=True)
class CompactRows:
    """A baseline's distributions at n positions, compact: ids, logprobs [n, k] (descending), rest [n] = log of
    the mass outside them, sample_ids, sample_logprobs [n, m] tail tokens drawn ∝ p_B (m may be 0). NumPy arrays
    (answer tokens, stored with a pass) or torch tensors (corpus positions)."""

    ids: Array
    logprobs: Array
    rest: Array
    sample_ids: Array
    sample_logprobs: Array

    def __len__(self) -> int:
        return int(self.rest.shape[0])

    @property
    def samples(self) -> int:
        return int(self.sample_ids.shape[-1])

    def slice(self, start: int, end: int) -> CompactRows:
        return CompactRows(*(getattr(self, f)[start:end] for f in _FIELDS))

    def numpy(self) -> CompactRows:
        if not _is_torch(self.rest):
            return self
        return CompactRows(*(getattr(self, f).cpu().numpy() for f in _FIELDS))


_FIELDS = ("ids", "logprobs", "rest", "sample_ids", "sample_logprobs")


def concat_rows(rows: list[CompactRows]) -> CompactRows:
    return CompactRows(*(_cat([getattr(r, f) for r in rows], rows[0].rest) for f in _FIELDS))


def pad_topk(rows: CompactRows, width: int) -> CompactRows:
    """``rows`` (numpy) with their top-k columns padded to ``width`` by empty entries (id -1, log-prob −inf), so
    that rows stored with different k (a server's top-k lists) can be concatenated."""
    pad = width - rows.ids.shape[1]
    if pad == 0:
        return rows
    ids = np.pad(rows.ids, ((0, 0), (0, pad)), constant_values=-1)
    values = np.pad(rows.logprobs, ((0, 0), (0, pad)), constant_values=-np.inf)
    return CompactRows(ids, values, rows.rest, rows.sample_ids, rows.sample_logprobs)


def compress(logprobs: Array, k: int, samples: int = 0, *, seed: int = 0, generator: Any = None) -> CompactRows:
    """Compact form of baseline rows. logprobs: [n, V] (head and rest renormalised here in float64) →
    CompactRows with the top ``k`` and ``samples`` stratified tail draws per row, as the input's array kind (ids
    int32/int64 as given by the framework, values float32). ``generator`` (a torch.Generator) or ``seed`` fixes
    the draws."""
    import torch

    given_numpy = not _is_torch(logprobs)
    rows = torch.from_numpy(np.ascontiguousarray(logprobs)) if given_numpy else logprobs
    gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(seed)
    k = min(k, rows.shape[-1])
    m = samples if k < rows.shape[-1] else 0
    parts = []
    for s, e in _blocks(rows.shape[0]):
        x = rows[s:e]  # [b, V], as given (float32 mostly): a float64 copy of every row would double the cost
        values, ids = torch.topk(x, k, dim=-1)  # [b, k], descending
        weights = (x - values[:, :1]).exp().scatter_(-1, ids, 0.0)  # [b, V] ∝ the tail's probabilities, head 0
        blocks = _in_blocks(weights)  # [b, nb, SAMPLE_BLOCK]
        sums = blocks.sum(-1).double()  # [b, nb]: the tail summed over its own tokens (never 1 − Σ head)
        head, rest = values.double(), values[:, 0].double() + torch.log(sums.sum(-1))  # [b, k], [b]
        total = torch.logaddexp(torch.logsumexp(head, dim=-1), rest)  # [b]: head + rest renormalised in float64
        if m:
            strata = torch.arange(m, dtype=torch.float64) + torch.rand(e - s, m, dtype=torch.float64, generator=gen)
            drawn = _stratified(blocks, sums, (strata / m).to(sums.device)).clamp(max=rows.shape[-1] - 1)
        else:
            drawn = torch.zeros(e - s, 0, dtype=torch.long, device=rows.device)
        sampled = x.gather(-1, drawn).double() - total[:, None]  # [b, m]
        parts.append(CompactRows(ids, (head - total[:, None]).float(), (rest - total).float(), drawn, sampled.float()))
    out = concat_rows(parts)
    if given_numpy:
        out = out.numpy()
        return replace(out, ids=out.ids.astype(np.int32), sample_ids=out.sample_ids.astype(np.int32))
    return out


#: Tail sampling searches blocks of this many tokens, then one block: no cumulative sum over the whole row.
SAMPLE_BLOCK = 256


def _in_blocks(weights: Any) -> Any:
    """weights: [b, V] → [b, ⌈V/B⌉, B], zero-padded (a view where V is a multiple of B)."""
    import torch.nn.functional as F

    pad = (-weights.shape[-1]) % SAMPLE_BLOCK
    padded = F.pad(weights, (0, pad)) if pad else weights
    return padded.view(weights.shape[0], -1, SAMPLE_BLOCK)


def _stratified(blocks: Any, sums: Any, fractions: Any) -> Any:
    """Tokens drawn ∝ weight at the given fractions of each row's total (inverse CDF, two levels).
    blocks: [b, nb, B] non-negative weights; sums: [b, nb] float64 block totals; fractions: [b, m] in [0, 1) →
    token indices [b, m], each of positive weight wherever the row has any."""
    import torch

    cdf = sums.cumsum(-1)  # [b, nb]
    u = fractions * cdf[:, -1:]  # [b, m]
    j = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)  # [b, m]: the block holding u
    below = torch.where(j > 0, cdf.gather(-1, (j - 1).clamp(min=0)), 0.0)  # [b, m]
    inner = blocks.gather(1, j[..., None].expand(-1, -1, blocks.shape[-1])).double().cumsum(-1)  # [b, m, B]
    # The block's own cumulative sum can end a rounding error below its total: stay inside it, so the first
    # position whose cumulative sum exceeds r always has positive weight.
    r = torch.minimum(u - below, inner[..., -1] * (1 - 1e-12))  # [b, m]
    i = torch.searchsorted(inner, r[..., None], right=True)[..., 0].clamp(max=blocks.shape[-1] - 1)  # [b, m]
    return j * blocks.shape[-1] + i


@dataclass(frozen=True)
class CompactKL:
    """Per-position KL from a compact baseline: ``forward`` = KL(B‖C), an unbiased estimate when the store has
    tail samples, else a lower bound (``forward_is_bound``); ``reverse`` = KL(C‖B), always a lower bound."""

    forward: Array
    reverse: Array
    forward_is_bound: bool
    log_norm: Array  # [n]: the candidate rows' log-normalisers (≈ 0 for log-probability rows)


def kl_compact(base: CompactRows, cand: Array) -> CompactKL:
    """KL both ways from the compact baseline and the candidate's full rows cand: [n, V] scores (log-probs, or
    logits: normalised here) → [n] each; ``log_norm`` [n]: each candidate row's log-normaliser."""
    forward, reverse, norms = [], [], []
    for s, e in _blocks(len(base)):
        b = base.slice(s, e)
        lse, rest_c = log_norms(cand[s:e], b.ids)  # [b] each; rest_c: the mass outside the baseline's top-k
        lb, lc = _f64(b.logprobs), _f64(gather(cand[s:e], b.ids)) - lse[:, None]  # [b, k]
        rest_c = rest_c - lse
        norms.append(lse)
        rest_b = _f64(b.rest)  # [b]
        xp = _xp(lc)
        fwd = kl_terms(lb, lc).sum(-1) + kl_terms(rest_b, rest_c)
        reverse.append(kl_terms(lc, lb).sum(-1) + kl_terms(rest_c, rest_b))
        if b.samples:
            sb = _f64(b.sample_logprobs) - rest_b[:, None]  # [b, m], log B̃(v_j)
            sc = _f64(gather(cand[s:e], b.sample_ids)) - (lse + rest_c)[:, None]  # [b, m], log C̃(v_j)
            within = xp.exp(rest_b) * bregman(sc - sb).mean(-1)
            fwd = fwd + xp.where(xp.isfinite(rest_b), within, 0.0)  # no tail mass: no within-tail term (not NaN)
        forward.append(fwd)
    return CompactKL(_cat(forward, base.rest), _cat(reverse, base.rest), forward_is_bound=base.samples == 0,
                     log_norm=_cat(norms, base.rest))  # fmt: skip
