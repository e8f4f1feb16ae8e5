"""Log-likelihood scoring that computes each shared piece of text once, several questions per forward pass.

A request is prefix + prompt + k continuations; the context (prefix + prompt) is tokenised as one text and each
continuation on its own. Requests are grouped by prefix (task header and few-shot examples): the prefix's tokens
run once and their key/value cache is reused by every prompt of the group (a prefix used by a single request is
simply part of its prompt).

Where the model allows it (``_hf_packed``: full attention, or rows within every window; a kernel that takes a custom
mask; a probe on the model agreeing), a prompt and all its options run as one row under a mask, the items of many
groups in one batch — one forward per batch, no copies of the prompt's keys and values per option.

Otherwise the cache-copying path: prompts run in right-padded batches with explicit position ids; each prompt's last
position predicts every continuation's first token, so single-token options (" A".." D") need no further pass.
Longer options of the whole batch then run as one right-padded batch on top of their prompts' cache, with logits
computed only at option positions and bounded by a memory budget. A request with a single multi-token option
(Winogrande's per-option contexts, a free-form answer scored teacher-forced) runs prompt and option as one
left-padded row instead. A window counts padding as positions, so a model with a bounded window runs one request
per pass there.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch

from flipscope.errors import FlipscopeError
from flipscope.models import _hf_packed as packing
from flipscope.models.base import OptionScores, RowSink, nonfinite_scores
from flipscope.models.hf_common import bos_prefix, cache_argument, cache_layers, context_ids
from flipscope.tasks import ScoreRequest


def _select_rows(cache: Any, indices: torch.Tensor) -> Any:
    """A cache holding ``cache``'s batch rows ``indices`` (repeats allowed); ``cache`` itself is left as it was."""
    if hasattr(cache, "layers"):
        # selecting builds new tensors, so shallow copies of the cache and its layers suffice
        out = copy.copy(cache)
        out.layers = [copy.copy(layer) for layer in cache.layers]
    else:  # older transformers
        out = copy.deepcopy(cache)
    out.batch_select_indices(indices)
    return out


def _cache_bytes(cache: Any) -> int:
    """Bytes held by a key/value cache's tensors."""
    return packing.state_bytes(cache_layers(cache))


def _option_score(rows: torch.Tensor, ids: list[int]) -> tuple[float, bool]:
    """rows: log-probs [T, V] predicting the option's T tokens ``ids`` → (their summed log-probability, whether
    each is its row's argmax: the option is the greedy decoding; ``argmax`` gives a tie to the lowest id)."""
    target = torch.tensor(ids, device=rows.device)  # [T]
    total = float(rows.gather(1, target[:, None]).sum())
    return total, bool((rows.argmax(dim=-1) == target).all())


def _common_length(sequences: Sequence[list[int]]) -> int:
    """Length of the longest run of leading ids that all ``sequences`` share."""
    n = 0
    for column in zip(*sequences, strict=False):
        if any(v != column[0] for v in column):
            break
        n += 1
    return n


@dataclass(frozen=True)
class _Item:
    index: int  # position in the caller's request list
    prompt: list[int]  # token ids after the shared prefix
    options: list[list[int]]


class PrefixScorer:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str,
        *,
        label: str,
        logits_budget: int = 64 << 20,
        batch_tokens: int = 512,
        max_batch: int = 16,
        packed: bool = True,
        cache_budget: int = 1 << 30,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.label = label
        self.logits_budget = logits_budget  # bytes of option logits, and of prompt-cache copies, per forward pass
        self.batch_tokens = max(batch_tokens, 32 * max_batch)  # padded prompt tokens per forward pass
        self.max_batch = max_batch
        self.bos = bos_prefix(tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cache_kw = cache_argument(model)
        self.nonfinite: set[int] = set()  # requests of the current ``score`` call with NaN or infinite logits
        self.packed = packed  # a prompt and its options in one row where the model allows it (``_hf_packed``)
        self.cache_budget = cache_budget  # bytes of prefix keys/values held by packed scoring
        self.rows_per_pass = max_batch  # the cache-copying path's rows per pass (``score`` may lower it to 1)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    @staticmethod
    def full_cache() -> Any:
        """A cache that keeps every position in every layer (the packed path's masks say what each query sees)."""
        from transformers import DynamicCache

        return DynamicCache()

    def _check(self, lse: torch.Tensor, index: int) -> None:
        """``lse``: the log-sum-exp of logits rows; NaN or +inf anywhere in a row shows up in it. Such a request
        is scored NaN (reported per item and left out of every metric), not an error for the whole pass."""
        if not bool(torch.isfinite(lse).all()):
            self.nonfinite.add(index)

    def _groups(self, requests: Sequence[ScoreRequest]) -> Iterator[tuple[list[int], list[_Item]]]:
        """(shared prefix ids, items after it). Each context (prefix + prompt) is tokenised as one text, as a
        server or lm-eval would see it; the requests of one prefix share the longest common run of leading ids
        (the prefix's tokens, up to where its last token may merge with a prompt). Requests alone with their
        prefix are pooled, the whole context in the prompt."""
        order = sorted(range(len(requests)), key=lambda i: requests[i].prefix)
        pooled: list[_Item] = []
        for prefix, members in groupby(order, key=lambda i: requests[i].prefix):
            indices = list(members)
            contexts = [context_ids(self.tokenizer, prefix + requests[i].prompt, self.bos) for i in indices]
            shared = 0
            if len(indices) > 1 and prefix:
                shared = min(_common_length(contexts), min(len(c) for c in contexts) - 1)  # keep ≥ 1 prompt id
            items = [
                _Item(i, context[shared:], [self.encode(text) for text in requests[i].continuations])
                for i, context in zip(indices, contexts, strict=True)
            ]
            for item in items:
                if shared + len(item.prompt) == 0:
                    raise FlipscopeError(f"request {item.index} has an empty context (and the tokenizer adds no BOS)",
                                         fix="give each request some context to continue")  # fmt: skip
                if any(not option for option in item.options):
                    raise FlipscopeError(
                        f"request {item.index} has an option that encodes to no tokens", fix="remove empty options"
                    )
            if shared > 0:
                yield contexts[0][:shared], items
            else:
                pooled += items
        if pooled:
            yield [], pooled

    def _batches(self, items: list[_Item], past: int = 0, token_bytes: int = 0) -> Iterator[list[_Item]]:
        """Similar lengths together, at most ``batch_tokens`` padded prompt tokens per batch, and at most the budget
        in key/value cache: each row holds its own copy of the ``past`` prefix tokens (``token_bytes`` each)."""
        batch: list[_Item] = []
        for item in sorted(items, key=lambda it: len(it.prompt)):
            width = max([len(it.prompt) for it in batch] + [len(item.prompt)])
            cache = (len(batch) + 1) * (past + width) * token_bytes
            if batch and (
                len(batch) >= self.rows_per_pass
                or (len(batch) + 1) * width > self.batch_tokens
                or cache > self.logits_budget
            ):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def _prompts(self, batch: list[_Item], prefix_cache: Any, past: int) -> tuple[torch.Tensor, Any]:
        """Run a batch of prompts after the prefix; returns first-token log-probs [B, V] and the batch's cache."""
        n, width = len(batch), max(len(it.prompt) for it in batch)
        cache = copy.deepcopy(prefix_cache) if past else self.new_cache()
        if past and n > 1:
            cache.batch_repeat_interleave(n)
        inp = torch.full((n, width), self.pad, dtype=torch.long, device=self.device)  # [B, Lp]
        mask = torch.zeros((n, past + width), dtype=torch.long, device=self.device)  # [B, P0 + Lp]
        mask[:, :past] = 1
        for b, item in enumerate(batch):
            inp[b, : len(item.prompt)] = torch.tensor(item.prompt, dtype=torch.long)
            mask[b, past : past + len(item.prompt)] = 1
        positions = (past + torch.arange(width, device=self.device)).expand(n, width)  # [B, Lp]
        last = [len(item.prompt) - 1 for item in batch]
        keep = sorted(set(last))
        out = self.model(
            input_ids=inp,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=self.device),
            **{self.cache_kw: cache},
        )
        at = torch.tensor([keep.index(pos) for pos in last], device=self.device)
        first = out.logits[torch.arange(n, device=self.device), at].float()  # [B, V]
        lse = torch.logsumexp(first, dim=-1, keepdim=True)  # [B, 1]
        for b, item in enumerate(batch):
            self._check(lse[b], item.index)
        return first.sub_(lse), cache

    def _option_chunks(
        self, rows: list[tuple[int, int]], batch: list[_Item], vocab: int, row_bytes: int
    ) -> Iterator[list[tuple[int, int]]]:
        """Option rows sorted by length, cut where the logits or the rows' copies of the prompt cache (``row_bytes``
        each: every option row needs its own copy of its prompt's keys and values) would pass their budgets, or where
        padding would dominate."""
        chunk: list[tuple[int, int]] = []
        narrowest = 0
        for b, o in sorted(rows, key=lambda row: len(batch[row[0]].options[row[1]])):
            width = len(batch[b].options[o]) - 1
            too_big = (len(chunk) + 1) * width * vocab * 4 > self.logits_budget
            too_big = too_big or (len(chunk) + 1) * row_bytes > self.logits_budget
            if chunk and (too_big or width > 2 * narrowest + 4):
                yield chunk
                chunk = []
            if not chunk:
                narrowest = width
            chunk.append((b, o))
        if chunk:
            yield chunk

    def _options(
        self,
        batch: list[_Item],
        first: torch.Tensor,
        cache: Any,
        past: int,
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(batch row, option, rows) with the log-probs predicting each of the option's tokens, rows:
        [len(option), V], valid until the next is asked for: the caller reduces each to what is kept (the option's
        log-likelihood, the sink's compact form) before the next chunk runs."""
        for b, item in enumerate(batch):
            for o, tokens in enumerate(item.options):
                if len(tokens) == 1:
                    yield b, o, first[b][None]
        longer = [(b, o) for b, item in enumerate(batch) for o, t in enumerate(item.options) if len(t) > 1]
        if not longer:
            return
        prompt_width = max(len(it.prompt) for it in batch)
        chunks = list(self._option_chunks(longer, batch, first.shape[-1], _cache_bytes(cache) // len(batch)))
        for chunk in chunks:
            rows = _select_rows(cache, torch.tensor([b for b, _ in chunk], device=self.device))
            n = len(chunk)
            width = max(len(batch[b].options[o]) for b, o in chunk) - 1
            inp = torch.full((n, width), self.pad, dtype=torch.long, device=self.device)  # [R, W]
            mask = torch.zeros((n, past + prompt_width + width), dtype=torch.long, device=self.device)
            positions = torch.zeros((n, width), dtype=torch.long, device=self.device)  # [R, W]
            mask[:, :past] = 1
            for r, (b, o) in enumerate(chunk):
                body = batch[b].options[o][:-1]  # the last token predicts nothing we need
                length = len(batch[b].prompt)
                inp[r, : len(body)] = torch.tensor(body, dtype=torch.long)
                mask[r, past : past + length] = 1
                mask[r, past + prompt_width : past + prompt_width + len(body)] = 1
                positions[r] = past + length + torch.arange(width, device=self.device)
            logits = self.model(
                input_ids=inp, attention_mask=mask, position_ids=positions, use_cache=True, **{self.cache_kw: rows}
            ).logits
            logprobs = logits.float()  # [R, W, V]; normalised in place, a row at a time: no second [R, W, V] buffer
            for r, (b, o) in enumerate(chunk):
                own = logprobs[r, : len(batch[b].options[o]) - 1]  # [T-1, V]
                lse = torch.logsumexp(own, dim=-1, keepdim=True)  # [T-1, 1]
                self._check(lse, batch[b].index)
                yield b, o, torch.cat([first[b][None], own.sub_(lse)])
            del logits, logprobs, rows

    def _folded_batches(self, items: list[_Item], past: int, token_bytes: int) -> Iterator[list[_Item]]:
        """Batches of one-option items (prompt + option run as one row): bounded in padded tokens, in logits kept
        (rows × the longest option × vocabulary) and in copies of the prefix cache."""
        vocab = int(self.model.config.get_text_config().vocab_size)  # the logits' width (multimodal configs too)
        batch: list[_Item] = []
        for item in sorted(items, key=lambda it: len(it.prompt) + len(it.options[0])):
            group = [*batch, item]
            width = max(len(it.prompt) + len(it.options[0]) - 1 for it in group)
            longest = max(len(it.options[0]) for it in group)
            if batch and (
                len(group) > self.rows_per_pass
                or len(group) * width > self.batch_tokens
                or len(group) * longest * vocab * 4 > self.logits_budget
                or len(group) * (past + width) * token_bytes > self.logits_budget
            ):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def _folded(self, batch: list[_Item], prefix_cache: Any, past: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Items with a single multi-token option, each run as one left-padded row of prompt + option (no second
        pass, no per-option cache copy); yields (batch row, log-probs [T, V] predicting the option's tokens)."""
        n = len(batch)
        rows = [it.prompt + it.options[0][:-1] for it in batch]
        width, keep = max(len(r) for r in rows), max(len(it.options[0]) for it in batch)
        cache = copy.deepcopy(prefix_cache) if past else self.new_cache()
        if past and n > 1:
            cache.batch_repeat_interleave(n)
        inp = torch.full((n, width), self.pad, dtype=torch.long, device=self.device)  # [B, L], left-padded
        mask = torch.zeros((n, past + width), dtype=torch.long, device=self.device)  # [B, P0 + L]
        mask[:, :past] = 1
        positions = torch.full((n, width), past, dtype=torch.long, device=self.device)  # [B, L]
        for b, row in enumerate(rows):
            start = width - len(row)
            inp[b, start:] = torch.tensor(row, dtype=torch.long)
            mask[b, past + start :] = 1
            positions[b, start:] = past + torch.arange(len(row), device=self.device)
        logits = self.model(
            input_ids=inp,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{self.cache_kw: cache},
        ).logits  # [B, keep, V]: the last positions of every row
        for b, item in enumerate(batch):
            own = logits[b, keep - len(item.options[0]) :].float()  # [T, V]
            lse = torch.logsumexp(own, dim=-1, keepdim=True)  # [T, 1]
            self._check(lse, item.index)
            yield b, own.sub_(lse)
        del logits, cache

    @torch.no_grad()  # not inference_mode: some quantized weight types (quanto int4) refuse inference tensors
    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        results: list[OptionScores | None] = [None] * len(requests)
        self.nonfinite = set()
        limit = packing.pack_limit(self.model, self.cache_kw, self.full_cache, self.device) if self.packed else 0.0

        def done(item: _Item, sums: list[tuple[float, bool]]) -> None:
            results[item.index] = OptionScores(
                tuple(v for v, _ in sums), tuple(len(t) for t in item.options), tuple(g for _, g in sums)
            )
            if advance is not None:
                advance(1)

        groups = list(self._groups(requests))
        longest = max((len(p) + packing.row_length(it) for p, items in groups for it in items), default=0)
        # the cache-copying path pads rows, and a window counts padding as positions: where a padded row could pass
        # the model's window, one request per pass (then the cache is the one generation uses, and exact)
        padded = _padded_bound(groups)
        self.rows_per_pass = self.max_batch if padded < packing.window(self.model) else 1
        if limit and longest <= limit:
            packer = packing.Packer(self.model, self.cache_kw, self.full_cache, self.device, self.pad, self.max_batch,
                                    max(self.batch_tokens, 1024), self.logits_budget, self.cache_budget)  # fmt: skip
            for item, per_option, lse in packer.run(groups):  # [T, V] per option
                self._check(lse, item.index)
                if rows is not None:
                    for o, own in enumerate(per_option):
                        rows(item.index, o, own.cpu().numpy())
                done(item, [_option_score(own, t) for own, t in zip(per_option, item.options, strict=True)])
            groups = []
        for prefix_ids, items in groups:
            prefix_cache = None
            if prefix_ids:
                prefix_cache = self.new_cache()
                inp = torch.tensor([prefix_ids], device=self.device)  # [1, P0]
                self.model(input_ids=inp, use_cache=True, logits_to_keep=1, **{self.cache_kw: prefix_cache})
            token_bytes = _cache_bytes(prefix_cache) // len(prefix_ids) if prefix_ids else 0
            folded = [it for it in items if len(it.options) == 1 and len(it.options[0]) > 1]
            for batch in self._folded_batches(folded, len(prefix_ids), token_bytes):
                for b, option_rows in self._folded(batch, prefix_cache, len(prefix_ids)):  # [T, V]
                    item = batch[b]
                    if rows is not None:
                        rows(item.index, 0, option_rows.cpu().numpy())
                    done(item, [_option_score(option_rows, item.options[0])])
            items = [it for it in items if not (len(it.options) == 1 and len(it.options[0]) > 1)]
            for batch in self._batches(items, len(prefix_ids), token_bytes):
                first, cache = self._prompts(batch, prefix_cache, len(prefix_ids))
                sums: dict[tuple[int, int], tuple[float, bool]] = {}
                for b, o, option_rows in self._options(batch, first, cache, len(prefix_ids)):  # [T, V]
                    item = batch[b]
                    sums[(b, o)] = _option_score(option_rows, item.options[o])
                    if rows is not None:
                        rows(item.index, o, option_rows.cpu().numpy())
                for b, item in enumerate(batch):
                    done(item, [sums[(b, o)] for o in range(len(item.options))])
        return nonfinite_scores([r for r in results if r is not None], self.nonfinite, self.label)


def _padded_bound(groups: list[tuple[list[int], list[_Item]]]) -> int:
    """What no padded row of the cache-copying path can pass: the longest prefix + prompt + option of a call."""
    entries = [(p, it) for p, items in groups for it in items]
    prefix = max((len(p) for p, _ in entries), default=0)
    prompt = max((len(it.prompt) for _, it in entries), default=0)
    option = max((len(o) for _, it in entries for o in it.options), default=0)
    return prefix + prompt + option
