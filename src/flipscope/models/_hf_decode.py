"""Continuous batching for transformers models whose key/value cache is plain full attention (Llama, Qwen, Mistral
without a window, …): a decode loop of our own that keeps ``batch_size`` rows busy.

- The prompts' longest shared token prefix (a few-shot context: GSM8K's 8 exemplars are ~750 of ~800 tokens) is run
  once; its keys and values are copied into every row instead of being recomputed per prompt.
- Each row's own suffix is prefilled against that prefix; rows in the cache are laid out
  ``[prefix | padding | suffix | new tokens]``, with the padding masked out and explicit position ids, so rows of
  any length share one cache tensor per layer.
- A row that stops (EOS, a stop string, ``max_new_tokens``) leaves the batch at once, and a waiting prompt takes its
  slot: no row decodes past its end while waiting for the batch's longest answer. Cache columns that no row attends
  any more are dropped.

Greedy at temperature 0; otherwise sampled with a generator seeded from the recorded seed. Models with sliding-window
or other cache layers use transformers' ``generate`` instead (``_hf_generate``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flipscope.models._base import Decoding, cut_at_stop


def supported(model: Any) -> bool:
    """Whether every cache layer of the model is a plain full-attention layer (what this loop's layout needs)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - any model transformers cannot describe falls back to ``generate``
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def shared_prefix(encoded: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all prompts share, leaving every prompt at least one token of its own."""
    first, limit = encoded[0], min(len(e) for e in encoded) - 1
    length = 0
    while length < limit and all(e[length] == first[length] for e in encoded):
        length += 1
    return length


@dataclass
class _Row:
    index: int  # the request's position
    position: int  # the position id of the next token fed
    new: list[int] = field(default_factory=list)


class _Batch:
    """The running rows' cache: per layer keys/values [B, H, T, D], and the attention mask [B, T] over its columns."""

    def __init__(self) -> None:
        self.layers: list[tuple[Any, Any]] = []
        self.mask: Any = None
        self.rows: list[_Row] = []

    def cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=self.layers)

    def take(self, cache: Any) -> None:
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def add(self, layers: list[tuple[Any, Any]], mask: Any, rows: list[_Row], prefix: int) -> None:
        """Join newly prefilled rows; the shorter side gets masked padding columns right after the prefix."""
        if not self.rows:
            self.layers, self.mask, self.rows = layers, mask, rows
            return
        gap = self.mask.shape[1] - mask.shape[1]
        if gap > 0:
            layers, mask = [(_widen(k, prefix, gap), _widen(v, prefix, gap)) for k, v in layers], _widen(mask, prefix, gap)
        elif gap < 0:
            self.layers = [(_widen(k, prefix, -gap), _widen(v, prefix, -gap)) for k, v in self.layers]
            self.mask = _widen(self.mask, prefix, -gap)
        import torch

        self.layers = [(torch.cat([k0, k1]), torch.cat([v0, v1])) for (k0, v0), (k1, v1) in zip(self.layers, layers)]
        self.mask = torch.cat([self.mask, mask])
        self.rows += rows

    def keep(self, kept: list[int]) -> None:
        """Keep only the rows at ``kept``, then drop the cache columns none of them attends."""
        import torch

        if not kept:
            self.__init__()  # type: ignore[misc]
            return
        rows = torch.tensor(kept, dtype=torch.long, device=self.mask.device)
        mask = self.mask[rows]
        columns = mask.any(dim=0).nonzero().flatten()  # [T']
        self.mask = mask[:, columns]
        self.layers = [(k[rows][:, :, columns], v[rows][:, :, columns]) for k, v in self.layers]
        self.rows = [self.rows[i] for i in kept]


def _widen(tensor: Any, at: int, width: int) -> Any:
    """Insert ``width`` zero columns at column ``at`` of the sequence axis (-2 for keys/values, 1 for the mask)."""
    import torch

    axis = 1 if tensor.dim() == 2 else 2
    shape = list(tensor.shape)
    shape[axis] = width
    zeros = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor.narrow(axis, 0, at), zeros, tensor.narrow(axis, at, tensor.shape[axis] - at)], dim=axis)


def decode(
    model: Any,
    tokenizer: Any,
    device: str,
    encoded: Sequence[list[int]],
    decoding: Decoding,
    *,
    batch_size: int,
    pad: int,
    finish: Callable[[list[int], int], Any],
    advance: Callable[[int], None] | None = None,
) -> list[Any]:
    """Generate for every encoded prompt; ``finish(new_tokens, request_index)`` turns a stopped row into its result."""
    import torch

    eos = tokenizer.eos_token_id
    prefix = shared_prefix(encoded)
    generator = torch.Generator(device=device).manual_seed(decoding.seed) if decoding.temperature > 0 else None

    def pick(logits: Any) -> list[int]:  # logits [B, V] → one token per row
        if generator is None:
            return [int(t) for t in logits.argmax(dim=-1)]
        probs = torch.softmax(logits.double() / decoding.temperature, dim=-1)
        return [int(t) for t in torch.multinomial(probs, 1, generator=generator).flatten()]

    with torch.no_grad():
        head: list[tuple[Any, Any]] = []
        if prefix:
            ids = torch.tensor([encoded[0][:prefix]], device=device)  # [1, P]
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            head = [(layer.keys, layer.values) for layer in out.past_key_values.layers]  # [1, H, P, D] each

        def admit(indices: list[int]) -> tuple[list[tuple[Any, Any]], Any, list[_Row], list[int]]:
            """Prefill these prompts' suffixes against the shared prefix: their cache, mask, rows, first tokens."""
            width = max(len(encoded[i]) - prefix for i in indices)
            ids = torch.full((len(indices), width), pad, dtype=torch.long)  # [k, W] left-padded suffixes
            mask = torch.zeros((len(indices), prefix + width), dtype=torch.long)  # [k, P + W]
            mask[:, :prefix] = 1
            positions = torch.zeros((len(indices), width), dtype=torch.long)  # [k, W]
            for row, i in enumerate(indices):
                suffix = encoded[i][prefix:]
                ids[row, width - len(suffix) :] = torch.tensor(suffix)
                mask[row, prefix + width - len(suffix) :] = 1
                positions[row, width - len(suffix) :] = torch.arange(prefix, len(encoded[i]))
            cache = None
            if head:
                from transformers import DynamicCache

                cache = DynamicCache(ddp_cache_data=[(k.expand(len(indices), -1, -1, -1).contiguous(),
                                                      v.expand(len(indices), -1, -1, -1).contiguous()) for k, v in head])  # fmt: skip
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                        past_key_values=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            rows = [_Row(i, len(encoded[i])) for i in indices]
            return layers, mask.to(device), rows, pick(out.logits[:, -1].float())

        results: list[Any] = [None] * len(encoded)
        waiting = deque(sorted(range(len(encoded)), key=lambda i: -len(encoded[i])))
        batch = _Batch()
        tokens: list[int] = []
        while waiting or batch.rows:
            free = batch_size - len(batch.rows)
            if waiting and free > 0:
                joining = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                layers, mask, rows, first = admit(joining)
                batch.add(layers, mask, rows, prefix)
                tokens += first
            kept: list[int] = []
            for slot, (row, token) in enumerate(zip(batch.rows, tokens, strict=True)):
                row.new.append(token)
                if _stopped(row.new, token, eos, tokenizer, decoding):
                    results[row.index] = finish(row.new, row.index)
                    if advance:
                        advance(1)
                else:
                    kept.append(slot)
            if len(kept) < len(batch.rows):
                batch.keep(kept)
                tokens = [tokens[s] for s in kept]
            if not batch.rows:
                continue
            ids = torch.tensor([[t] for t in tokens], device=device)  # [B, 1]
            positions = torch.tensor([[row.position + len(row.new) - 1] for row in batch.rows], device=device)
            batch.mask = torch.cat([batch.mask, torch.ones((len(tokens), 1), dtype=torch.long, device=device)], 1)
            out = model(input_ids=ids, attention_mask=batch.mask, position_ids=positions,
                        past_key_values=batch.cache(), use_cache=True)  # fmt: skip
            batch.take(out.past_key_values)
            tokens = pick(out.logits[:, -1].float())
    return results


def _stopped(new: list[int], token: int, eos: int | None, tokenizer: Any, decoding: Decoding) -> bool:
    if token == eos or len(new) >= decoding.max_new_tokens:
        return True
    if not decoding.stop:
        return False
    return cut_at_stop(str(tokenizer.decode(new, skip_special_tokens=True)), decoding.stop)[1]
