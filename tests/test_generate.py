"""Generation: batched, left-padded, cached decoding gives, token for token, what a brute-force greedy loop (one
prompt, full forward pass per step, no cache) gives; each row stops on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.models.base import Decoding, GenRequest, StopReason, cut_at_stop

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


def test_a_sampled_answer_does_not_depend_on_the_rows_beside_it(tiny_llama: Path) -> None:
    """Each request samples from its own seeded generator: alone, in a batch or in another order, the same draw; the
    same prompt at two items draws twice (a draw's items do not share one random stream)."""
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=3))
    d = Decoding(max_new_tokens=8, temperature=1.0, seed=3)
    requests = [GenRequest(p, seed=d.request_seed(i)) for i, p in enumerate(PROMPTS)]
    together = [g.text for g in backend.generate(requests, d)]
    assert [backend.generate([r], d)[0].text for r in requests] == together
    assert [g.text for g in backend.generate(requests[::-1], d)][::-1] == together
    twice = backend.generate([GenRequest(PROMPTS[0])] * 2, d)
    assert twice[0].text != twice[1].text
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


def greedy_ids(model, ids: list[int], steps: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Brute force: ``steps`` greedy tokens, one full forward pass per step, no cache, no stopping."""
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            new.append(int(torch.argmax(model(input_ids=torch.tensor([ids + new])).logits[0, -1])))
    return new


def static_path(monkeypatch: pytest.MonkeyPatch, continuous: bool) -> None:
    """Send generation through transformers' ``generate`` (the path of models with sliding-window caches)."""
    from flipscope.models import _hf_decode

    if not continuous:
        monkeypatch.setattr(_hf_decode, "supported", lambda model: False)


def stop_inside(texts: list[list[str]], rows: list[int]) -> tuple[int, str]:
    """(row, stop string): two letters or digits that one of ``rows`` completes before its last step and another
    never writes. ``texts[r][k]``: row r's first k greedy tokens decoded."""
    for r in rows:
        for k in range(1, len(texts[r]) - 2):
            for j in range(len(texts[r][k]) - 1):
                stop = texts[r][k][j : j + 2]
                new = stop.isascii() and stop.isalnum() and stop not in texts[r][k - 1]
                if new and any(stop not in texts[o][-1] for o in rows if o != r):
                    return r, stop
    raise AssertionError("no stop string fits these answers")


@pytest.mark.parametrize(
    ("continuous", "batch_size"),
    [(True, 5), (True, 3), (False, 5)],
    ids=["continuous", "continuous-refill", "static"],  # refill: 3 slots, rows leave and waiting prompts join
)
def test_rows_that_stop_at_different_steps_match_each_row_alone(
    tiny_llama: Path, continuous: bool, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch where rows stop on EOS at different steps, on a stop string, and at the length limit: each row's
    text, reason and token counts equal generating that row alone, and the brute-force loop's."""
    static_path(monkeypatch, continuous)
    steps = 12
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=batch_size))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    free = [greedy_ids(model, tok.encode(p, add_special_tokens=False), steps) for p in PROMPTS]
    # EOS: a token that two rows reach first at different steps (≥ 1) and some row never reaches
    firsts = {t: [row.index(t) if t in row else None for row in free] for row in free for t in row}
    eos = next(t for t, at in firsts.items()
               if len({s for s in at if s is not None and s >= 1}) >= 2 and at.count(None) >= 2)  # fmt: skip
    tok.eos_token_id = eos
    without = [i for i, at in enumerate(firsts[eos]) if at is None]
    row_stop, stop = stop_inside([[tok.decode(row[:k], skip_special_tokens=True) for k in range(steps + 1)]
                                  for row in free], without)  # fmt: skip
    decoding = Decoding(max_new_tokens=steps, stop=(stop,))
    together = backend.generate([GenRequest(p) for p in PROMPTS], decoding)
    alone = [backend.generate([GenRequest(p)], decoding)[0] for p in PROMPTS]
    assert together == alone  # text, stop reason, prompt and new token counts, token ids
    for g, row in zip(together, free, strict=True):  # and each is what the brute-force loop gives
        end = row.index(eos) if eos in row else steps
        expected, hit = cut_at_stop(tok.decode(row[:end], skip_special_tokens=True), (stop,))
        assert g.text == expected
        if hit:
            assert g.stop_reason is StopReason.STOP
        elif eos in row:
            assert g.stop_reason is StopReason.EOS and g.new_tokens == end + 1
        else:
            assert g.stop_reason is StopReason.LENGTH and g.new_tokens == steps
    reasons = [g.stop_reason for g in together]
    assert reasons[row_stop] is StopReason.STOP and together[row_stop].new_tokens < steps
    assert StopReason.LENGTH in reasons
    assert len({g.new_tokens for g in together if g.stop_reason is StopReason.EOS}) >= 2  # EOS at different steps
    backend.close()


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_sampled_first_tokens_follow_the_softmax_at_the_temperature(
    tiny_llama: Path, continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4,000 rows of one prompt, one sampled token each: the answers' frequencies fit softmax(logits / T) (chi-square
    over the answers expected ≥ 5 times, the rest pooled; tokens with the same text — special tokens, byte
    fragments — pooled as the answer text does) and reject the softmax at another temperature."""
    from collections import Counter

    from scipy.stats import chisquare

    static_path(monkeypatch, continuous)
    draws, temperature = 4000, 0.5
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=1000))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    prompt = "The capital of France is"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tok.encode(prompt, add_special_tokens=False)])).logits[0, -1].double()
    made = backend.generate([GenRequest(prompt)] * draws, Decoding(max_new_tokens=1, temperature=temperature, seed=5))
    assert all(g.new_tokens == 1 and g.stop_reason is StopReason.LENGTH for g in made)
    counts = Counter(g.text for g in made)
    texts = [tok.decode([i], skip_special_tokens=True) for i in range(logits.shape[0])]

    def p_value(t: float) -> float:
        expected: Counter[str] = Counter()
        for text, p in zip(texts, torch.softmax(logits / t, dim=-1).tolist(), strict=True):
            expected[text] += p * draws
        kept = [text for text, e in expected.items() if e >= 5]
        assert len(kept) >= 5  # enough distinct outcomes for the test to mean something
        rest = [text for text in expected if text not in kept]
        observed = [counts[text] for text in kept] + ([sum(counts[text] for text in rest)] if rest else [])
        assert sum(observed) == draws  # every answer is one of the vocabulary's texts
        pooled = [expected[text] for text in kept] + ([sum(expected[text] for text in rest)] if rest else [])
        return float(chisquare(observed, pooled).pvalue)

    assert p_value(temperature) > 1e-3
    assert p_value(temperature * 1.25) < 1e-6 and p_value(temperature / 1.25) < 1e-6  # the check has power
    backend.close()


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_sampling_near_zero_temperature_is_greedy(
    tiny_llama: Path, continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    static_path(monkeypatch, continuous)
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=3))
    requests = [GenRequest(p) for p in PROMPTS]
    greedy = backend.generate(requests, Decoding(max_new_tokens=8))
    cold = backend.generate(requests, Decoding(max_new_tokens=8, temperature=1e-3, seed=7))
    hot = backend.generate(requests, Decoding(max_new_tokens=8, temperature=1.0, seed=7))
    assert [g.text for g in cold] == [g.text for g in greedy]
    assert [g.text for g in hot] != [g.text for g in greedy]  # sampling did happen at T = 1
    backend.close()


def test_a_joining_row_takes_a_stopped_rows_slot_in_place(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows stop at different steps (a stop string, the length limit) and waiting prompts take their slots: written
    into the freed slot, the other rows not copied (few rebuilds), each row's answer what it is alone — including a
    joining prompt with a shared prefix and suffixes of different lengths."""
    from flipscope.models import _hf_decode

    copied: list[bool] = []  # per refill that let rows into a running batch: whether it rebuilt the batch
    inside = [False]
    rebuild, refill = _hf_decode._Batch.rebuild, _hf_decode._Batch.refill

    def spy_rebuild(self: Any, *args: Any, **kwargs: Any) -> None:
        if inside[0] and copied:
            copied[-1] = True
        rebuild(self, *args, **kwargs)

    def spy_refill(self: Any, kept: list[int], joining: Any, prefix: int) -> None:
        running = len(self.rows) > len(kept) > 0 and joining is not None and bool(joining.rows)
        copied.append(False)
        inside[0] = True
        refill(self, kept, joining, prefix)
        inside[0] = False
        if not running:
            copied.pop()

    monkeypatch.setattr(_hf_decode._Batch, "rebuild", spy_rebuild)
    monkeypatch.setattr(_hf_decode._Batch, "refill", spy_refill)
    prompts = [CONTEXT * 4 + p for p in [*PROMPTS, "Jupiter", "Why is the sky blue?", "Name a moon."]]
    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu", batch_size=2))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    free = [greedy_ids(model, tok.encode(p, add_special_tokens=False), 12) for p in prompts]
    stop = tok.decode(free[0][3:5], skip_special_tokens=True)  # row 0 stops early; lengths differ
    assert stop.strip()
    decoding = Decoding(max_new_tokens=12, stop=(stop,))
    together = backend.generate([GenRequest(p) for p in prompts], decoding)
    in_place = copied.count(False)
    alone = [backend.generate([GenRequest(p)], decoding)[0] for p in prompts]
    assert together == alone
    assert in_place >= 2 and in_place >= len(copied) // 2  # most joins took a stopped row's slot without a copy
    backend.close()
