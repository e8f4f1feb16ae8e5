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


CONTEXT = "Q: What is the capital of Spain?\nA: Madrid.\n\nQ: Name a planet.\nA: Mars.\n\n"


@pytest.mark.parametrize(
    ("prompts", "batch_size", "continuous"),
    [
        (PROMPTS, 3, True),  # no shared prefix; 5 prompts through 3 slots: rows leave and waiting prompts join
        ([CONTEXT + p for p in [*PROMPTS, "Jupiter", "Why is the sky blue?"]], 2, True),  # a shared few-shot prefix
        (PROMPTS, 3, False),  # transformers' generate (models with sliding-window caches)
    ],
    ids=["continuous", "shared-prefix", "static"],
)
def test_batched_generation_equals_brute_force_greedy(
    tiny_llama: Path, prompts: list[str], batch_size: int, continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flipscope.models import _hf_decode

    if not continuous:
        monkeypatch.setattr(_hf_decode, "supported", lambda model: False)
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=batch_size))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    assert _hf_decode.supported(model) is continuous
    free = [brute_force(model, tokenizer, p, 10) for p in prompts]
    # a stop string taken from inside one answer: that row stops early, the others (mostly) run to the limit
    stop = free[1][len(free[1]) // 2 : len(free[1]) // 2 + 2]
    assert stop.strip()
    got = backend.generate([GenRequest(p) for p in prompts], Decoding(max_new_tokens=10, stop=(stop,)))
    expected = [cut_at_stop(text, (stop,)) for text in free]
    assert [g.text for g in got] == [text for text, _ in expected]
    assert [g.stop_reason is StopReason.STOP for g in got] == [hit for _, hit in expected]
    assert got[1].stop_reason is StopReason.STOP
    assert all(g.new_tokens == 10 for g, (_, hit) in zip(got, expected, strict=True) if not hit)
    backend.close()


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    from flipscope.models._hf_decode import shared_prefix

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert shared_prefix([[1, 2], [1, 2, 3]]) == 1
    assert shared_prefix([[7, 2], [1, 2]]) == 0


def test_sampling_repeats_with_the_recorded_seed(tiny_llama: Path) -> None:
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=2))
    requests = [GenRequest(p) for p in PROMPTS]

    def sample(seed: int) -> list[str]:
        return [g.text for g in backend.generate(requests, Decoding(max_new_tokens=8, temperature=1.0, seed=seed))]

    first = sample(3)
    assert sample(3) == first
    assert sample(4) != first  # 5 prompts × 8 tokens from a random model's near-uniform distribution
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
