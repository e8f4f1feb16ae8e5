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

Greedy at temperature 0; otherwise each row samples from a generator of its own (its request's seed). Models with
sliding-window or other cache layers use transformers' ``generate`` instead (``_hf_generate``)."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flipscope.models.base import Decoding, cut_at_stop
from flipscope.models.hf_common import cache_argument, cache_layers


def supported(model: Any) -> bool:
    """Whether every cache layer of the model is a plain full-attention layer (what this loop's layout needs)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # any model transformers cannot describe falls back to ``generate``
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


def _slab(keys: Any, values: Any, spare: int) -> Any:
    """One layer's keys and values [B, H, T, D] inside buffers with room for ``spare`` more columns: each decode step
    writes its new column in place (transformers' DynamicLayer concatenates, copying the whole cache every step)."""
    return _slab_class()(keys, values, spare)


@functools.cache
def _slab_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class Slab(DynamicLayer):  # type: ignore[misc]
        def __init__(self, keys: Any, values: Any, spare: int) -> None:
            super().__init__()
            self.device, self.is_initialized = keys.device, True
            self._fill(keys, values, spare)

        def _fill(self, k: Any, v: Any, room: int) -> None:
            import torch

            b, h, t, d = k.shape
            self.kbuf = torch.empty((b, h, t + room, d), dtype=k.dtype, device=k.device)
            self.vbuf = torch.empty((b, h, t + room, v.shape[-1]), dtype=v.dtype, device=v.device)
            self.kbuf[:, :, :t], self.vbuf[:, :, :t] = k, v
            self.length = t
            self.keys, self.values = self.kbuf[:, :, :t], self.vbuf[:, :, :t]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n = key_states.shape[-2]
            if self.length + n > self.kbuf.shape[-2]:  # a refilled row outlives the room: grow by a quarter
                self._fill(self.keys, self.values, max(n, self.length // 4))
            self.kbuf[:, :, self.length : self.length + n] = key_states
            self.vbuf[:, :, self.length : self.length + n] = value_states
            self.length += n
            self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]
            return self.keys, self.values

    return Slab


class _Batch:
    """The running rows: per layer a slab of keys/values [B, H, T, D], the attention mask [B, T] over its columns."""

    def __init__(self, spare: int) -> None:
        self.spare = spare
        self.slabs: list[Any] = []
        self.mask: Any = None
        self.rows: list[_Row] = []

    def cache(self) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.layers = self.slabs
        return cache

    def rebuild(self, kept: list[int], joining: _Batch | None, prefix: int, *, force: bool = False) -> None:
        """Keep the rows at ``kept`` and add ``joining``'s (the shorter side padded with masked columns right after
        the prefix), in one copy; cache columns that no row attends any more are dropped."""
        import torch

        if joining is not None and not self.rows:
            self.slabs, self.mask, self.rows = joining.slabs, joining.mask, joining.rows  # adopted, no copy
            return
        if joining is None and len(kept) == len(self.rows) and not force:
            return
        chosen = [(self, kept)] + ([(joining, list(range(len(joining.rows))))] if joining is not None else [])
        sides = [(side, torch.tensor(picked, dtype=torch.long, device=side.mask.device)) for side, picked in chosen
                 if picked]  # fmt: skip
        rows = [side.rows[int(i)] for side, picked in sides for i in picked]
        if not rows:
            self.slabs, self.mask, self.rows = [], None, []
            return
        width = max(side.mask.shape[1] for side, _ in sides)

        def joined(tensors: list[Any]) -> Any:  # one [B_side, …, T_side, …] per side → [B, …, width, …]
            return torch.cat([_widen(t[picked], prefix, width - side.mask.shape[1])
                              for t, (side, picked) in zip(tensors, sides, strict=True)])  # fmt: skip

        mask = joined([side.mask for side, _ in sides])
        columns = mask.any(dim=0).nonzero().flatten()  # [T'] the columns some row attends
        slabs = []
        for depth in range(len(self.slabs)):  # layer by layer, each old slab released as its copy is made
            k = joined([side.slabs[depth].keys for side, _ in sides])[:, :, columns]
            v = joined([side.slabs[depth].values for side, _ in sides])[:, :, columns]
            for side, _ in sides:
                side.slabs[depth] = None
            slabs.append(_slab(k, v, self.spare))
            del k, v
        self.slabs, self.mask, self.rows = slabs, mask[:, columns], rows

    def refill(self, kept: list[int], joining: _Batch | None, prefix: int) -> None:
        """Rows that stopped give their slots to ``joining``'s rows in place — each joining row's own keys and values
        written into its slot's last columns, the slot's other columns after the prefix masked — so the rows that
        go on are not copied. Where that cannot be done (no row goes on, more rows join than left, or a joining
        row's columns do not fit in the room after the prefix) the batch is rebuilt; it is compacted when rows left
        without a replacement or when a third of its columns is attended by no row."""
        free = [slot for slot in range(len(self.rows)) if slot not in set(kept)]
        joined = len(joining.rows) if joining is not None else 0
        if not kept or not joined or len(free) < joined:
            self.rebuild(kept, joining if joined else None, prefix)
            return
        assert self.mask is not None and joining is not None and joining.mask is not None
        width, end = self.mask.shape[1], joining.mask.shape[1]
        own = joining.mask[:, prefix:].sum(dim=1).tolist()  # each joining row's columns after the prefix
        if max(own) > width - prefix:
            self.rebuild(kept, joining, prefix)
            return
        for j, slot in enumerate(free[:joined]):
            n = int(own[j])
            for mine, theirs in zip(self.slabs, joining.slabs, strict=True):
                mine.kbuf[slot, :, width - n : width] = theirs.keys[j, :, end - n : end]
                mine.vbuf[slot, :, width - n : width] = theirs.values[j, :, end - n : end]
            self.mask[slot, prefix:] = 0
            self.mask[slot, width - n :] = 1
            self.rows[slot] = joining.rows[j]
        staying = sorted([*kept, *free[:joined]])
        if len(staying) < len(self.rows) or 3 * int((~self.mask.bool().any(dim=0)).sum()) > width:
            self.rebuild(staying, None, prefix, force=True)


def _widen(tensor: Any, at: int, width: int) -> Any:
    """Insert ``width`` zero columns at column ``at`` of the sequence axis (-2 for keys/values, 1 for the mask)."""
    import torch

    axis = 1 if tensor.dim() == 2 else 2
    if width == 0:
        return tensor
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
    seeds: Sequence[int] | None = None,
) -> list[Any]:
    """Generate for every encoded prompt; ``finish(new_tokens, request_index)`` turns a stopped row into its result.
    Sampling: each prompt draws from a generator of its own, seeded with ``seeds[i]`` (None:
    ``decoding.request_seed(i)``), so its answer does not depend on the rows it shares a batch with."""
    import torch
    from transformers import DynamicCache

    eos = tokenizer.eos_token_id
    kw = cache_argument(model)
    prefix = shared_prefix(encoded)
    generators: dict[int, Any] = {}  # request index → its own generator (sampling)

    def pick(logits: Any, rows: Sequence[_Row]) -> list[int]:  # logits [B, V] → one token per row
        if decoding.temperature <= 0:
            return [int(t) for t in logits.argmax(dim=-1)]
        probs = torch.softmax(logits.double() / decoding.temperature, dim=-1)  # [B, V]
        out = []
        for r, row in enumerate(rows):
            if row.index not in generators:
                seed = seeds[row.index] if seeds is not None else decoding.request_seed(row.index)
                generators[row.index] = torch.Generator(device=device).manual_seed(seed)
            out.append(int(torch.multinomial(probs[r], 1, generator=generators[row.index])))
        return out

    with torch.no_grad():
        head: list[tuple[Any, Any]] = []
        if prefix:
            ids = torch.tensor([encoded[0][:prefix]], device=device)  # [1, P]
            cache: Any = DynamicCache()
            model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kw: cache})
            head = cache_layers(cache)  # [1, H, P, D] each

        batch = _Batch(spare=decoding.max_new_tokens)
        results: list[Any] = [None] * len(encoded)

        def stops(row: _Row, token: int) -> bool:
            """Add the row's new token; a row that stops is finished here and leaves the batch."""
            row.new.append(token)
            if not _stopped(row.new, token, eos, tokenizer, decoding):
                return False
            results[row.index] = finish(row.new, row.index)
            if advance:
                advance(1)
            return True

        def admit(indices: list[int]) -> _Batch:
            """Prefill these prompts' suffixes against the shared prefix, in slabs of their own (the prefix's keys
            and values copied in, the suffix written after them), and add each row's first token."""
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
            part = _Batch(spare=width + decoding.max_new_tokens)
            part.slabs = [_slab(k.expand(len(indices), -1, -1, -1), v.expand(len(indices), -1, -1, -1), part.spare)
                          for k, v in head]  # fmt: skip
            part.mask, part.rows = mask.to(device), [_Row(i, len(encoded[i])) for i in indices]
            cache: Any = part.cache() if head else DynamicCache()
            out = model(input_ids=ids.to(device), attention_mask=part.mask, position_ids=positions.to(device),
                        use_cache=True, logits_to_keep=1, **{kw: cache})  # fmt: skip
            if not head:
                part.slabs = [_slab(layer.keys, layer.values, decoding.max_new_tokens) for layer in cache.layers]
            del cache
            first = pick(out.logits[:, -1].float(), part.rows)
            del out
            part.spare = decoding.max_new_tokens
            part.rebuild([r for r, (row, t) in enumerate(zip(part.rows, first, strict=True)) if not stops(row, t)],
                         None, prefix)  # fmt: skip
            return part

        waiting = deque(sorted(range(len(encoded)), key=lambda i: -len(encoded[i])))
        kept: list[int] = []
        while waiting or batch.rows:
            free = batch_size - len(kept)
            joining = admit([waiting.popleft() for _ in range(min(free, len(waiting)))]) if waiting and free else None
            batch.refill(kept, joining, prefix)
            if not batch.rows:
                kept = []
                continue
            ids = torch.tensor([[row.new[-1]] for row in batch.rows], device=device)  # [B, 1]
            positions = torch.tensor([[row.position + len(row.new) - 1] for row in batch.rows], device=device)
            batch.mask = torch.cat([batch.mask, torch.ones((len(ids), 1), dtype=torch.long, device=device)], 1)
            out = model(input_ids=ids, attention_mask=batch.mask, position_ids=positions,
                        use_cache=True, **{kw: batch.cache()})  # fmt: skip
            tokens = pick(out.logits[:, -1].float(), batch.rows)
            del out  # its cache object lists the slabs, which ``rebuild`` replaces
            kept = [slot for slot, (row, t) in enumerate(zip(batch.rows, tokens, strict=True)) if not stops(row, t)]
    return results


def _stopped(new: list[int], token: int, eos: int | None, tokenizer: Any, decoding: Decoding) -> bool:
    if token == eos or len(new) >= decoding.max_new_tokens:
        return True
    if not decoding.stop:
        return False
    return cut_at_stop(str(tokenizer.decode(new, skip_special_tokens=True)), decoding.stop)[1]
