"""How an answer-token KL was obtained: the ``token_kl`` label of a pass's pass.json and of run.json's details.

Where both sides give full-vocabulary rows over the same vocabulary, token KL is an *unbiased estimate*: the
baseline is stored as its top-k, the mass of the rest and tokens sampled from the rest (``metrics.kl``); a *lower
bound* without tail samples; exact only where the stored top-k holds the whole vocabulary. Where a side gives only a
server's top-k it is *top-k approximate* (``metrics.topk_kl``)."""

from __future__ import annotations

from enum import StrEnum


class TokenKL(StrEnum):
    """How a pass's answer-token KL was obtained: the ``token_kl`` of its pass.json and of run.json's details."""

    #: full rows both sides; the baseline stored as top-k + rest mass + sampled tail tokens
    ESTIMATE = "unbiased estimate (sampled tail)"
    #: the same without tail samples (``--tail-samples 0``): KL over top-k ∪ {rest}
    LOWER_BOUND = "lower bound (top-k + rest, no tail samples)"
    #: a side gave only a server's top-k, matched by token text
    TOPK_APPROXIMATE = "top-k approximate (lower bound)"
    #: the stored top-k holds the whole vocabulary (no tail)
    EXACT = "exact (the stored top-k is the whole vocabulary)"

    @classmethod
    def read(cls, value: str | None, *, tail_samples: int) -> TokenKL | None:
        """A stored label; "exact", which versions before this one wrote for the sampled estimate, is read as
        what it was: the estimate, or the lower bound where the run stored no tail samples."""
        if value is None:
            return None
        if value == "exact":
            return cls.ESTIMATE if tail_samples else cls.LOWER_BOUND
        return cls(value)
