"""Per-position distances between a baseline and a candidate on text, from log-probability rows.

All functions take a slice of positions at a time (at most a few hundred rows of the vocabulary), so memory stays
bounded whatever the context length. The baseline comes either as full rows (live or the exact store) or as its
top-k with the log of the remaining mass (the compact store); in the compact form KL is computed over the
partition top-k ∪ {rest}, which by the log-sum inequality is a lower bound of the full-vocabulary KL, in both
directions. Optional tail samples (drawn ∝ p_B outside the top-k) add an unbiased estimate of the within-tail term
of KL(B‖C), as for answer tokens (``metrics/token_kl.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Ranked tokens compared for top-k agreement (k = 1..AGREE_K).
AGREE_K = 10


@dataclass(frozen=True)
class TopK:
    """The baseline at n positions: ids, logprobs [n, k] (descending), rest [n] = log of the mass outside them;
    sample_ids, sample_logprobs [n, m] tail tokens drawn ∝ p_B (m may be 0)."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    rest: torch.Tensor
    sample_ids: torch.Tensor
    sample_logprobs: torch.Tensor


@dataclass(frozen=True)
class PositionStats:
    """Per scored position (tensors of shape [n]): KL both ways, the true next token's log-prob under each model,
    the baseline's top log-prob, and how many of the ranked top-10 tokens agree from the top (0 … 10)."""

    kl: torch.Tensor
    kl_reverse: torch.Tensor
    logp_base: torch.Tensor
    logp_cand: torch.Tensor
    top_logp_base: torch.Tensor
    agree: torch.Tensor


def log_rest(logprobs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside ``ids``. logprobs: [n, V]; ids: [n, k] → [n]."""
    import torch

    masked = logprobs.scatter(-1, ids, float("-inf"))
    return torch.logsumexp(masked, dim=-1)


def top_k(logprobs: torch.Tensor, k: int, samples: int = 0, generator: torch.Generator | None = None) -> TopK:
    """Compact form of baseline rows. logprobs: [n, V] normalised → TopK with k ids and m = ``samples`` draws."""
    import torch

    k = min(k, logprobs.shape[-1])
    values, ids = torch.topk(logprobs, k, dim=-1)  # [n, k], descending
    rest = log_rest(logprobs, ids)  # [n]
    if samples and k < logprobs.shape[-1]:
        p = logprobs.double().exp().scatter(-1, ids, 0.0)  # [n, V]
        cdf = torch.cumsum(p, dim=-1)  # [n, V]
        strata = torch.arange(samples, dtype=torch.float64) + torch.rand(
            logprobs.shape[0], samples, dtype=torch.float64, generator=generator
        )
        u = strata / samples * cdf[:, -1:]  # [n, m]
        drawn = torch.searchsorted(cdf, u, right=True).clamp(max=logprobs.shape[-1] - 1)  # [n, m]
    else:
        drawn = torch.zeros(logprobs.shape[0], 0, dtype=torch.long)
    return TopK(ids, values, rest, drawn, logprobs.gather(-1, drawn))


def kl_both_ways(base: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact KL(B‖C) and KL(C‖B) per row. base, cand: [n, V] log-probs → ([n], [n])."""
    diff = base - cand  # [n, V]
    forward = (base.exp() * diff).sum(-1).clamp(min=0)
    reverse = (cand.exp() * -diff).sum(-1).clamp(min=0)
    return forward, reverse


def kl_both_ways_topk(base: TopK, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL over top-k ∪ {rest} (plus the sampled within-tail term for B‖C). cand: [n, V] log-probs → ([n], [n])."""
    import torch

    lb = base.logprobs.double()  # [n, k]
    lc = cand.gather(-1, base.ids).double()  # [n, k]
    rest_b = base.rest.double()  # [n]
    # The candidate's mass outside the baseline's top-k, from its k gathered values (O(n·k), not O(n·V)); its
    # absolute error is float32 rounding of a normalised row (~1e-7), negligible in both KL terms it enters.
    rest_c = torch.log1p(-lc.exp().sum(-1).clamp(max=1 - 1e-12))  # [n]
    finite_b, finite_c = torch.isfinite(rest_b), torch.isfinite(rest_c)
    mass_b = torch.where(finite_b, rest_b.exp(), 0.0)
    mass_c = torch.where(finite_c, rest_c.exp(), 0.0)
    gap = torch.where(finite_b & finite_c, rest_b - rest_c, 0.0)
    forward = (lb.exp() * (lb - lc)).sum(-1) + mass_b * torch.where(finite_b, gap, 0.0)
    reverse = (lc.exp() * (lc - lb)).sum(-1) + mass_c * torch.where(finite_c, -gap, 0.0)
    if base.sample_ids.shape[-1]:
        sb = base.sample_logprobs.double()  # [n, m]
        sc = cand.gather(-1, base.sample_ids).double()
        within = ((sb - rest_b[:, None]) - (sc - rest_c[:, None])).mean(-1)  # estimates KL(B_tail‖C_tail)
        forward = forward + torch.where(finite_b & finite_c, mass_b * within, 0.0)
    return forward.clamp(min=0).float(), reverse.clamp(min=0).float()


def agreement(base_top: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Length of the common prefix of the two ranked top-10 lists. base_top: [n, ≥10] ids; cand: [n, V] → [n]."""
    import torch

    k = min(AGREE_K, base_top.shape[-1], cand.shape[-1])
    cand_top = torch.topk(cand, k, dim=-1).indices  # [n, k]
    same = (base_top[:, :k] == cand_top).int()
    return torch.cumprod(same, dim=-1).sum(-1)


def position_stats(
    base_rows: torch.Tensor | None,
    base_topk: TopK | None,
    cand: torch.Tensor,
    targets: torch.Tensor,
    base_logp: torch.Tensor,
) -> PositionStats:
    """All per-position numbers for one slice. Exactly one of ``base_rows`` ([n, V]) or ``base_topk`` is given;
    cand: [n, V] log-probs; targets: [n] next-token ids; base_logp: [n] the baseline's log-prob of them."""
    if base_rows is not None:
        kl, rev = kl_both_ways(base_rows, cand)
        values, ids = base_rows.topk(AGREE_K, dim=-1)
        top = values[:, 0]
    else:
        assert base_topk is not None
        kl, rev = kl_both_ways_topk(base_topk, cand)
        ids, top = base_topk.ids, base_topk.logprobs[:, 0]
    return PositionStats(
        kl=kl,
        kl_reverse=rev,
        logp_base=base_logp.float(),
        logp_cand=cand.gather(-1, targets[:, None])[:, 0].float(),
        top_logp_base=top.float(),
        agree=agreement(ids, cand),
    )
