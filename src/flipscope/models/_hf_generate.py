"""Batched generation on transformers. Models with a plain full-attention cache decode with continuous batching and
a shared prompt prefix (``_hf_decode``); others (sliding-window layers, e.g. Gemma 3) through transformers'
``generate`` on static batches: prompts of similar length together, left-padded, each row stopping on its own at
EOS, a stop string or ``max_new_tokens`` (a row that has stopped only pads until its batch ends). Greedy at
temperature 0, sampling with the recorded seed otherwise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flipscope.models._hf_decode as _hf_decode
from flipscope.errors import FlipscopeError
from flipscope.models.base import Decoding, Generation, GenRequest, ModelInfo, StopReason, cut_at_stop, seed_of
from flipscope.models.hf_common import prompt_ids


def generate(
    model: Any,
    tokenizer: Any,
    device: str,
    requests: Sequence[GenRequest],
    decoding: Decoding,
    *,
    bos: list[int],
    info: ModelInfo,
    batch_size: int,
    advance: Callable[[int], None] | None = None,
) -> list[Generation]:
    """One generation per request, in order; ``info``: the model's label, whether it has a chat template and its
    context length (``capabilities.chat``, ``capabilities.max_context``)."""
    import torch

    chat, max_context, label = info.capabilities.chat, info.capabilities.max_context, info.label

    encoded = [prompt_ids(tokenizer, r, chat=chat, bos=bos) for r in requests]
    for index, prompt in enumerate(encoded):
        if max_context is not None and len(prompt) + decoding.max_new_tokens > max_context:
            raise FlipscopeError(
                f"{label}: prompt {index} is {len(prompt)} tokens; with {decoding.max_new_tokens} new tokens it "
                f"passes the model's {max_context}-token context",
                fix="lower --max-new-tokens or use fewer few-shot examples",
            )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if _hf_decode.supported(model):
        return _hf_decode.decode(
            model,
            tokenizer,
            device,
            encoded,
            decoding,
            batch_size=batch_size,
            pad=pad if pad is not None else 0,
            finish=lambda new, i: _finish(new, tokenizer, decoding, eos, len(encoded[i])),
            advance=advance,
            seeds=[seed_of(r, decoding, i) for i, r in enumerate(requests)],
        )
    out: list[Generation | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: len(encoded[i]))
    if decoding.temperature > 0 and requests:
        # once, with the first request's seed: each batch draws on from where the last one stopped. transformers'
        # generate has one generator for the batch, so a draw here depends on which prompts share the call.
        torch.manual_seed(seed_of(requests[0], decoding, 0))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad if pad is not None else 0, dtype=torch.long)  # [B, L] left-padded
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        sampling: dict[str, Any] = {"do_sample": False}
        if decoding.temperature > 0:
            sampling = {"do_sample": True, "temperature": decoding.temperature, "top_k": 0, "top_p": 1.0}
        stops = {"stop_strings": list(decoding.stop), "tokenizer": tokenizer} if decoding.stop else {}
        with torch.no_grad():
            made = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=decoding.max_new_tokens,
                pad_token_id=pad if eos is None else eos,  # a finished row goes on with EOS: it ends at its first
                eos_token_id=eos,
                **sampling,
                **stops,
            )  # [B, L + new]
        # rows end at their first EOS (padding is EOS); only without one is padding told apart by the pad token
        padded = eos is None and pad is not None and bool(decoding.stop)
        for row, i in enumerate(chunk):
            new = made[row, width:].tolist()
            while padded and new and new[-1] == pad:  # a row stopped by a stop string, padded to the batch's end
                new.pop()
            out[i] = _finish(new, tokenizer, decoding, eos, len(encoded[i]))
            if advance:
                advance(1)
    return [g for g in out if g is not None]


def _finish(new: list[int], tokenizer: Any, decoding: Decoding, eos: int | None, prompt_tokens: int) -> Generation:
    """One row's new tokens → its text up to the first stop string, why it stopped, and the text's tokens."""
    end = new.index(eos) if eos is not None and eos in new else None  # the EOS token, where one came
    text, stopped = cut_at_stop(str(tokenizer.decode(new[:end], skip_special_tokens=True)), decoding.stop)
    if stopped:
        reason, count = StopReason.STOP, len(new) if end is None else end
    elif end is not None:
        reason, count = StopReason.EOS, end + 1
    else:
        reason, count = StopReason.LENGTH, len(new)
    ids = tuple(tokenizer.encode(text, add_special_tokens=False))
    return Generation(text, reason, prompt_tokens, count, ids)
