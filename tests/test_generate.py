"""Generation: batched, left-padded, cached decoding gives, token for token, what a brute-force greedy loop (one
prompt, full forward pass per step, no cache) gives; each row stops on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.models._base import Decoding, GenRequest, StopReason, cut_at_stop

PROMPTS = [
    "The capital of France is",
    "Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune are planets of the",
    "Question: What is two plus two? Answer:",
    "Water",
    "The following are questions (with answers) about science and history. The capital of Italy is",
]


def brute_force(model, tokenizer, prompt: str, steps: int) -> str:  # type: ignore[no-untyped-def]
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]  # [V]
            token = int(torch.argmax(logits))
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return str(tokenizer.decode(new, skip_special_tokens=True))


def test_batched_generation_equals_brute_force_greedy(tiny_llama: Path) -> None:
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=3))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    free = [brute_force(model, tokenizer, p, 10) for p in PROMPTS]
    # a stop string taken from inside one answer: that row stops early, the others (mostly) run to the limit
    stop = free[1][len(free[1]) // 2 : len(free[1]) // 2 + 2]
    assert stop.strip()
    got = backend.generate([GenRequest(p) for p in PROMPTS], Decoding(max_new_tokens=10, stop=(stop,)))
    expected = [cut_at_stop(text, (stop,)) for text in free]
    assert [g.text for g in got] == [text for text, _ in expected]
    assert [g.stop_reason is StopReason.STOP for g in got] == [hit for _, hit in expected]
    assert got[1].stop_reason is StopReason.STOP
    assert all(g.new_tokens == 10 for g, (_, hit) in zip(got, expected, strict=True) if not hit)
    backend.close()


def test_a_prompt_longer_than_the_context_is_refused(tiny_llama: Path) -> None:
    from flipscope.errors import FlipscopeError

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"))
    with pytest.raises(FlipscopeError, match=r"prompt 1 is \d+ tokens; with 64 new tokens"):
        backend.generate([GenRequest("short"), GenRequest("Mars Venus " * 300)], Decoding(max_new_tokens=64))
    backend.close()


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop("a Q: b\n\nc", ("\n\n", "Q:")) == ("a ", True)
    assert cut_at_stop("abc", ("x", "")) == ("abc", False)
