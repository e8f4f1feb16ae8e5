"""Log-likelihood scoring that computes each shared piece of text once.

A request is prefix + prompt + k continuations. Requests are grouped by prefix (task header and few-shot
examples): the prefix runs once and its key/value cache is reused by every prompt of the group. Each prompt
runs once; its last position predicts every continuation's first token, so single-token options (" A".." D")
need no further pass. Longer options run together as one right-padded batch on top of the prompt's cache,
with logits computed only at option positions.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

import torch

from flipscope.errors import FlipscopeError
from flipscope.models._base import OptionScores, RowSink
from flipscope.tasks import ScoreRequest


class PrefixScorer:
    def __init__(self, model: Any, tokenizer: Any, device: str, *, label: str, logits_budget: int = 256 << 20) -> None:
        self.model = model
        self.logits_budget = logits_budget
        self.tokenizer = tokenizer
        self.device = device
        self.label = label
        bos = tokenizer.bos_token_id
        self.bos = [bos] if bos is not None and getattr(tokenizer, "add_bos_token", False) else []
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # transformers ≥ 5.x names the cache argument ``cache``; older releases ``past_key_values``.
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _forward(self, ids: list[int], cache: Any) -> torch.Tensor:
        """Run ``ids`` after ``cache`` (grown in place); returns log-probs at the last position [V]."""
        inp = torch.tensor([ids], device=self.device)  # [1, T]
        out = self.model(input_ids=inp, use_cache=True, logits_to_keep=1, **{self.cache_kw: cache})
        return torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # [V]

    def _check(self, logprobs: torch.Tensor, index: int) -> None:
        if not bool(torch.isfinite(logprobs).all()):
            raise FlipscopeError(
                f"model {self.label} produced NaN or infinite logits on request {index}",
                fix="check its compression settings, or run in float32 (--dtype float32)",
            )

    def _options(self, conts: list[list[int]], first: torch.Tensor, cache: Any, index: int) -> list[torch.Tensor]:
        """Per option, log-probs predicting each of its tokens: [len(option), V].

        Options run as right-padded batches on top of the prompt's cache, in chunks whose logits
        [n, W, V] float32 stay within ``logits_budget`` bytes (a single longer option runs alone).
        """
        if max(len(c) for c in conts) <= 1:
            return [first[None] for _ in conts]  # every option is one token: the prompt's last position
        vocab = first.shape[-1]
        out: list[torch.Tensor] = []
        chunk: list[list[int]] = []
        for tokens in conts:
            width = max(len(c) for c in [*chunk, tokens]) - 1
            if chunk and (len(chunk) + 1) * width * vocab * 4 > self.logits_budget:
                out += self._option_batch(chunk, first, copy.deepcopy(cache), index)
                chunk = []
            chunk.append(tokens)
        out += self._option_batch(chunk, first, cache, index)
        return out

    def _option_batch(self, conts: list[list[int]], first: torch.Tensor, cache: Any, index: int) -> list[torch.Tensor]:
        width = max(len(c) for c in conts) - 1
        if width <= 0:
            return [first[None] for _ in conts]
        n = len(conts)
        past = cache.get_seq_length()
        if n > 1:
            cache.batch_repeat_interleave(n)
        inp = torch.full((n, width), self.pad, dtype=torch.long, device=self.device)  # [n, W]
        mask = torch.zeros((n, past + width), dtype=torch.long, device=self.device)  # [n, P + W]
        mask[:, :past] = 1
        for o, tokens in enumerate(conts):
            body = tokens[:-1]  # the last token predicts nothing we need
            inp[o, : len(body)] = torch.tensor(body, dtype=torch.long)
            mask[o, past : past + len(body)] = 1
        logits = self.model(input_ids=inp, attention_mask=mask, use_cache=True, **{self.cache_kw: cache}).logits
        logprobs = logits.float()  # [n, W, V]; normalised in place: no second [n, W, V] buffer
        logprobs.sub_(torch.logsumexp(logprobs, dim=-1, keepdim=True))
        self._check(logprobs, index)
        return [torch.cat([first[None], logprobs[o, : len(c) - 1]]) for o, c in enumerate(conts)]

    @torch.inference_mode()
    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        results: list[OptionScores | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: requests[i].prefix)
        for prefix, group in groupby(order, key=lambda i: requests[i].prefix):
            prefix_ids = self.bos + self.encode(prefix)
            prefix_cache = self.new_cache()
            if prefix_ids:
                self._forward(prefix_ids, prefix_cache)
            for index in group:
                request = requests[index]
                prompt_ids = self.encode(request.prompt) if prefix_ids else self.bos + self.encode(request.prompt)
                cache = copy.deepcopy(prefix_cache) if prefix_ids else self.new_cache()
                first = self._forward(prompt_ids, cache)
                self._check(first, index)
                conts = [self.encode(text) for text in request.continuations]
                if any(not c for c in conts):
                    raise FlipscopeError(
                        f"request {index} has an option that encodes to no tokens", fix="remove empty options"
                    )
                per_option = self._options(conts, first, cache, index)
                logprobs, counts = [], []
                for o, (tokens, option_rows) in enumerate(zip(conts, per_option, strict=True)):
                    target = torch.tensor(tokens, device=option_rows.device)
                    logprobs.append(float(option_rows.gather(1, target[:, None]).sum()))
                    counts.append(len(tokens))
                    if rows is not None:
                        rows(index, o, option_rows.cpu().numpy())
                results[index] = OptionScores(tuple(logprobs), tuple(counts))
                if advance is not None:
                    advance(1)
        return [r for r in results if r is not None]
