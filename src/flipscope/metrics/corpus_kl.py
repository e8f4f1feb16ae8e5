"""Per-position distances between a baseline and a candidate on text, from log-probability rows.

All functions take a slice of positions at a time (at most a few hundred rows of the vocabulary), so memory stays
bounded whatever the context length. The baseline comes either as full rows (live: exact; or the full store's
quantised rows) or in the compact form (the compact store: each position's KL(B‖C) an unbiased estimate or a lower
bound, KL(C‖B) a lower bound); KL both ways comes from ``metrics/kl.py``, the estimator answer tokens use too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flipscope.metrics.kl import CompactRows, kl_compact, kl_exact, logsumexp

if TYPE_CHECKING:
    import torch

#: Ranked tokens compared for top-k agreement (k = 1..AGREE_K).
AGREE_K = 10


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


def agreement(base_top: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Length of the common prefix of the two ranked top-10 lists. base_top: [n, ≥10] ids; cand: [n, V] → [n]."""
    import torch

    k = min(AGREE_K, base_top.shape[-1], cand.shape[-1])
    cand_top = torch.topk(cand, k, dim=-1).indices  # [n, k]
    same = (base_top[:, :k] == cand_top).int()
    return torch.cumprod(same, dim=-1).sum(-1)


def position_stats(
    base_rows: torch.Tensor | None,
    base_topk: CompactRows | None,
    cand: torch.Tensor,
    targets: torch.Tensor,
    base_logp: torch.Tensor,
) -> PositionStats:
    """All per-position numbers for one slice. Exactly one of ``base_rows`` ([n, V]) or ``base_topk`` is given;
    cand: [n, V] the candidate's scores (log-probs, or logits: normalised here, once — no [n, V] copy of them is
    made beyond one exp temporary); targets: [n] next-token ids; base_logp: [n] the baseline's log-prob of them."""
    if base_rows is not None:
        kl, rev = kl_exact(base_rows, cand)  # renormalises both
        norm = logsumexp(cand)
        values, ids = base_rows.topk(AGREE_K, dim=-1)
        top = values[:, 0]
    else:
        assert base_topk is not None
        both = kl_compact(base_topk, cand)
        kl, rev, norm = both.forward, both.reverse, both.log_norm
        ids, top = base_topk.ids, base_topk.logprobs[:, 0]
    return PositionStats(
        kl=kl.float(),
        kl_reverse=rev.float(),
        logp_base=base_logp.float(),
        logp_cand=(cand.gather(-1, targets[:, None])[:, 0].double() - norm).float(),
        top_logp_base=top.float(),
        agree=agreement(ids, cand),
    )
