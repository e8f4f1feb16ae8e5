"""Packed option scoring: a prompt and all its options in one row, under an attention mask where each option sees the
prompt and itself, its positions restarting after the prompt — so options need no copies of the prompt's keys and
values, and a batch of questions is one forward pass.

A row is the prompt, then each option without its last token (that token predicts nothing scored); the prompt's last
position predicts every option's first token. The head runs only on the positions whose log-probabilities are kept.
This is exact where the attention kernel takes a custom mask (eager, sdpa) and every layer attends to all earlier
positions it is shown: a sliding-window layer is exact only while the whole row (with any cached prefix) fits in its
window, and a layer that carries state along the row (recurrent, state-space) never is. So packing is used only for
models whose configuration allows it, and only once a probe on the model itself — a packed row against the plain
rows it stands for — has agreed; any other model keeps the scorer's cache-copying path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flipscope.models.hf_common import cache_layers

log = logging.getLogger(__name__)

#: Models already probed: model → (its attention kernel then, the longest row, cached prefix included, a packed row is
#: exact for).
_PROBED: weakref.WeakKeyDictionary[Any, tuple[Any, float]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PackedLayout:
    """One batch of packed rows: inputs, mask, positions, and where each option's log-prob rows are kept."""

    ids: torch.Tensor  # [B, W] right-padded
    mask: torch.Tensor  # [B, 1, W, past + W] additive (0 where a query sees a key)
    positions: torch.Tensor  # [B, W]
    keep: torch.Tensor  # [N] flat indices (row · W + column) whose log-probs are kept, in item order
    rows: tuple[tuple[tuple[int, ...], ...], ...]  # [item][option] → indices into the N kept rows, one per token


def layout(items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pasts: Sequence[int], pad: int, *,
           dtype: torch.dtype, device: str) -> PackedLayout:  # fmt: skip
    """items: (prompt ids, options' ids), every prompt and option non-empty; ``pasts``: each row's cached prefix
    length (its keys first in the cache's row, padded to the longest). Segment 0 is the prompt, segment j the j-th
    option's body, -1 padding; a query sees its row's cached prefix and the earlier keys of the prompt and of its
    own segment."""
    bodies = [[list(option[:-1]) for option in options] for _, options in items]
    lengths = [len(prompt) + sum(len(b) for b in body) for (prompt, _), body in zip(items, bodies, strict=True)]
    n, width, past = len(items), max(lengths), max(pasts, default=0)
    ids = torch.full((n, width), pad, dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    keep: list[int] = []
    rows: list[tuple[tuple[int, ...], ...]] = []
    for b, ((prompt, _), body, before) in enumerate(zip(items, bodies, pasts, strict=True)):
        p = len(prompt)
        if p == 0:
            raise ValueError("a packed row needs a prompt token: its last one predicts the options' first")
        ids[b, :p] = torch.tensor(list(prompt), dtype=torch.long)
        segment[b, :p] = 0
        positions[b] = before
        positions[b, :p] = before + torch.arange(p)
        last = len(keep)
        keep.append(b * width + p - 1)  # the prompt's last position predicts every option's first token
        at, mine = p, []
        for j, tokens in enumerate(body, start=1):
            m = len(tokens)
            if m:
                ids[b, at : at + m] = torch.tensor(tokens, dtype=torch.long)
                segment[b, at : at + m] = j
                positions[b, at : at + m] = before + p + torch.arange(m)
            mine.append((last, *range(len(keep), len(keep) + m)))
            keep += range(b * width + at, b * width + at + m)
            at += m
        rows.append(tuple(mine))
    query, key = segment[:, :, None], segment[:, None, :]  # [B, W, 1], [B, 1, W]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # [W, W]
    seen = causal & ((key == 0) & (query >= 0) | (key == query))  # [B, W, W]; padding sees padding (never empty)
    cached = torch.arange(past)[None, :] < torch.tensor(list(pasts))[:, None]  # [B, P]: the row's own prefix
    seen = torch.cat([cached[:, None, :].expand(n, width, past), seen], dim=-1)  # [B, W, P + W]
    mask = torch.zeros((n, 1, width, past + width), dtype=dtype).masked_fill_(~seen[:, None], torch.finfo(dtype).min)
    return PackedLayout(ids.to(device), mask.to(device), positions.to(device), torch.tensor(keep, device=device),
                        tuple(rows))  # fmt: skip


def prefix_state(model: Any, cache_kw: str, cache: Any, ids: Sequence[int], device: str) -> list[tuple[Any, Any]]:
    """Run ``ids`` into the empty ``cache``; each layer's keys and values [1, heads, P, d]."""
    model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True, logits_to_keep=1, **{cache_kw: cache})
    return cache_layers(cache)


def stacked_cache(cache: Any, states: Sequence[list[tuple[Any, Any]] | None]) -> Any:
    """``cache`` (empty) holding, in row b, the prefix ``states[b]`` (None: none) from position 0 on, zeros after
    it up to the longest (the mask hides them)."""
    known = [s for s in states if s is not None]
    width = max(s[0][0].shape[2] for s in known)
    for layer in range(len(known[0])):
        k0, v0 = known[0][layer]
        keys = k0.new_zeros((len(states), k0.shape[1], width, k0.shape[3]))  # [B, heads, P, d]
        values = v0.new_zeros((len(states), v0.shape[1], width, v0.shape[3]))
        for b, state in enumerate(states):
            if state is not None:
                k, v = state[layer]
                keys[b, :, : k.shape[2]] = k[0]
                values[b, :, : v.shape[2]] = v[0]
        cache.update(keys, values, layer)
    return cache


@contextlib.contextmanager
def kept_positions(model: Any, keep: torch.Tensor) -> Iterator[None]:
    """Within: the model's output head sees only the flat positions ``keep`` of its input [B, W, H] → [1, N, H], so
    logits are computed where they are needed (what the model does after the head — scaling, soft-capping — still
    applies)."""
    head = model.get_output_embeddings()

    def gather(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1])[keep][None], *args[1:])

    hook = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        hook.remove()


def forward(model: Any, cache_kw: str, cache: Any, packed: PackedLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs [N, V] float32 at the layout's kept positions, their logits' log-sum-exp [N, 1]: NaN or +inf in a
    row shows there)."""
    with kept_positions(model, packed.keep):
        logits = model(
            input_ids=packed.ids,
            attention_mask=packed.mask,
            position_ids=packed.positions,
            use_cache=cache is not None,
            logits_to_keep=0,
            **({cache_kw: cache} if cache is not None else {}),
        ).logits[0]  # [N, V]
    logprobs = logits.float()
    lse = torch.logsumexp(logprobs, dim=-1, keepdim=True)
    return logprobs.sub_(lse), lse


#: Configuration names of attention windows applied inside attention modules by key index (GPT-Neo's local layers).
_WINDOW_NAMES = ("window_size", "attention_window", "local_window_size", "local_attention_window")

#: Rotary variants whose frequencies depend on the longest position in the batch: a row past the original length
#: would change every other row's.
_BATCH_ROPE = {"dynamic", "longrope"}


def window(model: Any) -> float:
    """The shortest attention window of the model's layers: unbounded with full attention in every layer, 0 with any
    layer of another kind (chunked, linear, recurrent)."""
    text = model.config.get_text_config()
    size = getattr(text, "sliding_window", None)
    kinds = set(getattr(text, "layer_types", None) or [])
    if kinds - {"full_attention", "sliding_attention"}:
        return 0.0
    sliding = "sliding_attention" in kinds if kinds else bool(size) and getattr(text, "use_sliding_window", True)
    local = [float(v) for v in (getattr(text, name, None) for name in _WINDOW_NAMES) if isinstance(v, int) and v > 0]
    if not sliding:
        return min(local, default=math.inf)
    return min([float(size), *local]) if size else 0.0


def configured_limit(model: Any) -> float:
    """The longest row (cached prefix included) the configuration lets a packed row be exact for: the model's
    ``window`` (capped at the original context for rotary scaling that depends on the batch's longest position)
    where the attention kernel takes a custom mask (eager, sdpa, and the kv: wrappers of either), else 0."""
    kernel = str(getattr(model.config, "_attn_implementation", None))
    if kernel.removeprefix("flipscope_kv_quant_") not in ("eager", "sdpa"):
        return 0.0
    limit = window(model)
    text = model.config.get_text_config()
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) in _BATCH_ROPE:
        original = getattr(text, "original_max_position_embeddings", None) or getattr(
            text, "max_position_embeddings", None
        )
        limit = min(limit, float(original or 0))
    return limit


def pack_limit(model: Any, cache_kw: str, new_cache: Any, device: str) -> float:
    """``configured_limit``, once a probe on the model agrees (cached per model and attention kernel): a packed row of
    a cached prefix, a prompt and two options against the plain row of prefix, prompt and the second option. Windows
    shorter than the probe's rows are not packed."""
    kernel = getattr(model.config, "_attn_implementation", None)
    known = _PROBED.get(model)
    if known is not None and known[0] == kernel:
        return known[1]
    limit = configured_limit(model)
    if limit < PROBE_LENGTH:
        limit = 0.0
    else:
        try:
            agrees = _probe(model, cache_kw, new_cache, device)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            log.info("packed option scoring off for this model: the probe failed (%s: %s)", type(exc).__name__, exc)
            agrees = False
        if not agrees:
            log.info("packed option scoring off for this model: a packed row differs from the plain one")
            limit = 0.0
    _PROBED[model] = (kernel, limit)
    return limit


#: The probe's plain row: 2 prefix, 3 prompt and 3 option tokens (the packed row holds 11).
PROBE_LENGTH = 12


@torch.no_grad()
def _probe(model: Any, cache_kw: str, new_cache: Any, device: str) -> bool:
    vocab = int(model.config.get_text_config().vocab_size)
    ids = [(7919 * k + 13) % vocab for k in range(1, 12)]
    prefix, prompt, first, second = ids[:2], ids[2:5], ids[5:8], ids[8:11]
    plain = model(input_ids=torch.tensor([prefix + prompt + second], device=device), use_cache=False).logits[0]
    expected = torch.log_softmax(plain[len(prefix) + len(prompt) - 1 : -1].float(), dim=-1)  # [3, V]
    state = prefix_state(model, cache_kw, new_cache(), prefix, device)
    cache = stacked_cache(new_cache(), [None, state])  # a row without a prefix beside one with it
    dtype = next(model.parameters()).dtype
    packed = layout([(second, [first]), (prompt, [first, second])], [0, len(prefix)], 0, dtype=dtype, device=device)
    got = forward(model, cache_kw, cache, packed)[0][list(packed.rows[1][1])]  # [3, V]
    scored = torch.tensor([second], device=got.device).T  # [3, 1]: the option's own tokens
    # rounding moves a token's log-probability by ~1e-5 in float32 and up to ~0.05 in half precision; a mask or
    # positions the model does not honour move it by far more
    tolerance = 1e-3 if dtype == torch.float32 else 0.25
    difference = (got.gather(1, scored) - expected.gather(1, scored)).abs().max()
    return bool(torch.isfinite(got).all()) and float(difference) <= tolerance


#: A packed batch's padded tokens per real token at most (padding costs what a real token does).
PADDING = 1.2


def row_length(item: Any) -> int:
    """The tokens of an item's packed row: its prompt and each option but the option's last token."""
    return len(item.prompt) + sum(len(o) - 1 for o in item.options)


def state_bytes(state: list[tuple[Any, Any]] | None) -> int:
    """Bytes held by layers' keys and values (``cache_layers``, ``prefix_state``)."""
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in state or [])


@dataclass(frozen=True)
class _Entry:
    item: Any  # the scorer's item: .index, .prompt, .options
    state: list[tuple[Any, Any]] | None  # its prefix's keys and values per layer
    past: int  # its prefix's length


@dataclass(frozen=True)
class Packer:
    """Runs the scorer's items as packed rows: the prefixes of a wave of groups computed once each, then every item
    of the wave sorted by length and batched across groups, each row's prefix stacked into the batch's cache."""

    model: Any
    cache_kw: str
    new_cache: Any  # () → an empty cache
    device: str
    pad: int
    max_batch: int
    batch_tokens: int  # padded tokens per forward pass
    logits_budget: int  # bytes of kept log-probs per forward pass
    cache_budget: int  # bytes of prefix keys/values held: the wave's, and a batch's stacked copies

    def run(
        self, groups: Iterable[tuple[list[int], list[Any]]]
    ) -> Iterator[tuple[Any, list[torch.Tensor], torch.Tensor]]:
        """(item, log-probs [T, V] predicting each option's tokens, its kept rows' log-sum-exp [n, 1])."""
        wave: list[_Entry] = []
        held, per_token = 0, 0.0
        for prefix, items in groups:
            if wave and held + len(prefix) * per_token > self.cache_budget // 2:  # flushed before the next is made
                yield from self._wave(wave)
                wave, held = [], 0
            state = prefix_state(self.model, self.cache_kw, self.new_cache(), prefix, self.device) if prefix else None
            size = state_bytes(state)
            per_token = per_token or (size / len(prefix) if prefix else 0.0)
            wave += [_Entry(item, state, len(prefix)) for item in items]
            held += size
        if wave:
            yield from self._wave(wave)

    def _wave(self, entries: list[_Entry]) -> Iterator[tuple[Any, list[torch.Tensor], torch.Tensor]]:
        for batch in self._batches(entries):
            yield from self._batch(batch)

    def _batches(self, entries: list[_Entry]) -> Iterator[list[_Entry]]:
        """Similar lengths together, across groups: bounded in rows, padded tokens, padding, kept log-probs and
        stacked prefix copies."""
        vocab = int(self.model.config.get_text_config().vocab_size)
        token_bytes = max((state_bytes(e.state) / e.past for e in entries if e.state is not None), default=0.0)
        batch: list[_Entry] = []
        kept = real = 0
        for entry in sorted(entries, key=lambda e: row_length(e.item)):
            length, mine = row_length(entry.item), 1 + sum(len(o) - 1 for o in entry.item.options)
            rows, width = len(batch) + 1, max([row_length(e.item) for e in batch] + [length])
            past = max([e.past for e in batch] + [entry.past])
            if batch and (
                rows > self.max_batch
                or rows * width > self.batch_tokens
                or rows * width > PADDING * (real + length)
                or (kept + mine) * vocab * 12 > self.logits_budget  # model-dtype logits, a float32 copy, exp
                or rows * (past + width) * token_bytes > self.cache_budget // 2
            ):
                yield batch
                batch, kept, real = [], 0, 0
            batch.append(entry)
            kept, real = kept + mine, real + length
        if batch:
            yield batch

    def _batch(self, batch: list[_Entry]) -> Iterator[tuple[Any, list[torch.Tensor], torch.Tensor]]:
        states = [e.state for e in batch]
        cache = stacked_cache(self.new_cache(), states) if any(s is not None for s in states) else None
        dtype = next(self.model.parameters()).dtype
        packed = layout([(e.item.prompt, e.item.options) for e in batch], [e.past for e in batch], self.pad,
                        dtype=dtype, device=self.device)  # fmt: skip
        logprobs, lse = forward(self.model, self.cache_kw, cache, packed)  # [N, V], [N, 1]
        for entry, rows in zip(batch, packed.rows, strict=True):
            yield entry.item, [logprobs[list(option)] for option in rows], lse[[r for o in rows for r in o]]
        del logprobs, cache
