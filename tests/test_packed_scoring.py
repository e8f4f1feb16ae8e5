"""Packed option scoring (models/_hf_packed.py): a prompt and its options in one row under a mask gives what the
cache-copying path and one pass per option give — options of different lengths, single-token options, prefixes of
different lengths in one batch — and models it would be wrong for (sliding windows shorter than a row, a forward
that drops the mask) keep the cache-copying path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flipscope.tasks import ScoreRequest
from tests.conftest import make_tokenizer

HEADER = "The following are questions.\n\nQuestion: Mars?\nAnswer: planet\n\n"
REQUESTS = [
    ScoreRequest(HEADER, "Question: Paris?\nAnswer:", (" France", " the capital of Italy", " four")),
    ScoreRequest(HEADER, "Question: Rome?\nAnswer:", (" Italy", " two plus two")),
    ScoreRequest("", "Q?\nA. x\nB. y\nAnswer:", (" A", " B")),  # single-token options: the prompt alone
    ScoreRequest("", "A much longer question about the planets Mercury and Venus?\nAnswer:", (" yes", " no way")),
    ScoreRequest("Header.\n\n", "Short?\nAnswer:", (" the capital of France is Paris", " x")),  # another prefix
    ScoreRequest("Header.\n\n", "A longer prompt that shares the header?\nAnswer:", (" Rome", " two plus two")),
    ScoreRequest("Tell me.\n\n", "Sarah beat Maria at chess so Sarah", (" was proud of the win.",)),  # one option
    ScoreRequest("Tell me.\n\n", "Sarah beat Maria so Maria", (" was proud of the win today.",)),
    ScoreRequest("", "A standalone context", (" continues here with words",)),
    ScoreRequest("", "Another", (" one",)),
]


def _reference(model: Any, tokenizer: Any, requests: list[ScoreRequest]) -> list[list[float]]:
    """One plain forward pass per option over the whole context and the option."""
    import torch

    out = []
    for request in requests:
        ctx = tokenizer.encode(request.prefix + request.prompt, add_special_tokens=False)
        mine = []
        for cont in request.continuations:
            ids = tokenizer.encode(cont, add_special_tokens=False)
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ctx + ids])).logits[0].float(), -1)
            mine.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(ids)))
        out.append(mine)
    return out


def _score(model: Any, tokenizer: Any, requests: list[ScoreRequest], **kwargs: Any) -> tuple[list[Any], dict]:
    from flipscope.models._hf_score import PrefixScorer

    rows: dict[tuple[int, int], np.ndarray] = {}
    scores = PrefixScorer(model, tokenizer, "cpu", label="x", **kwargs).score(
        requests, rows=lambda i, o, r: rows.__setitem__((i, o), r.copy())
    )
    return scores, rows


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from flipscope.models import _hf_packed

    calls: list[int] = []
    original = _hf_packed.forward
    monkeypatch.setattr(_hf_packed, "forward", lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.mark.parametrize("max_batch", [1, 3, 16])
def test_packed_rows_score_as_the_cache_copying_path_and_one_pass_per_option(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, max_batch: int
) -> None:
    from flipscope.models import LoadOptions, _hf_packed, load_backend, parse_spec

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    calls = _counting(monkeypatch)
    packed, packed_rows = _score(model, tokenizer, REQUESTS, max_batch=max_batch)
    assert calls and _hf_packed._PROBED[model][1] == math.inf  # the probe agreed and the packed path ran
    copied, copied_rows = _score(model, tokenizer, REQUESTS, max_batch=max_batch, packed=False)
    for a, b, ref in zip(packed, copied, _reference(model, tokenizer, REQUESTS), strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, rel=1e-6, abs=1e-5)
        assert a.logprobs == pytest.approx(ref, rel=1e-6, abs=1e-5)
        assert a.greedy == b.greedy and a.n_tokens == b.n_tokens
    assert packed_rows.keys() == copied_rows.keys()
    for key, rows in packed_rows.items():  # the [T, V] log-prob rows the token KL is computed from
        np.testing.assert_allclose(rows, copied_rows[key], atol=1e-5)


def test_the_packed_mask_is_the_brute_force_definition() -> None:
    """Query (row, i) sees key j of the row's cached prefix (j < its own past), and in the row: a key of the prompt
    or of its own option at or before it; positions restart after the prompt for every option."""
    import torch

    from flipscope.models._hf_packed import layout

    items = [([1, 2, 3], [[4, 5, 6], [7], [8, 9]]), ([1], [[2, 3]]), ([5, 6], [[7], [8]])]
    pasts = [4, 0, 2]
    got = layout(items, pasts, 0, dtype=torch.float32, device="cpu")
    width, past = got.ids.shape[1], max(pasts)
    for b, ((prompt, options), before) in enumerate(zip(items, pasts, strict=True)):
        segment = [0] * len(prompt) + [j for j, o in enumerate(options, start=1) for _ in o[:-1]]
        ids = list(prompt) + [t for o in options for t in o[:-1]]
        positions = list(range(len(prompt))) + [len(prompt) + t for o in options for t in range(len(o) - 1)]
        assert got.ids[b, : len(ids)].tolist() == ids
        assert got.positions[b, : len(ids)].tolist() == [before + p for p in positions]
        for q in range(len(ids)):
            for k in range(past + width):
                if k < past:
                    expected = k < before
                elif k - past < len(ids):
                    j = k - past
                    expected = j <= q and (segment[j] == 0 or segment[j] == segment[q])
                else:
                    expected = False  # padding
                assert (got.mask[b, 0, q, k] == 0).item() == expected, (b, q, k)
        for o, option in enumerate(options):  # each option's rows: the prompt's last, then its own positions
            flat = [int(got.keep[r]) for r in got.rows[b][o]]
            start = len(prompt) + sum(len(x) - 1 for x in options[:o])
            assert flat == [b * width + len(prompt) - 1] + [b * width + start + t for t in range(len(option) - 1)]


def _sliding_model(folder: Path, window: int) -> Path:
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    make_tokenizer(folder, 320, [r.prompt + " ".join(r.continuations) for r in REQUESTS])
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(AutoTokenizer.from_pretrained(folder)), hidden_size=64,
                           intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=window, pad_token_id=0)  # fmt: skip
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else None
    model.save_pretrained(folder)
    return folder


def test_a_sliding_window_shorter_than_a_row_keeps_the_cache_copying_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flipscope.models import LoadOptions, _hf_packed, load_backend, parse_spec

    folder = _sliding_model(tmp_path / "mistral", window=6)
    backend = load_backend(parse_spec(f"hf:{folder}"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    assert _hf_packed.configured_limit(model) == 6
    calls = _counting(monkeypatch)
    scores, _ = _score(model, tokenizer, REQUESTS)
    assert not calls and _hf_packed._PROBED[model][1] == 0.0
    reference = _reference(model, tokenizer, REQUESTS)
    for a, ref in zip(scores, reference, strict=True):
        assert a.logprobs == pytest.approx(ref, abs=1e-4)
    # packing forced on: the window is not what the mask says, and the numbers are wrong (the check has power)
    monkeypatch.setitem(_hf_packed._PROBED, model, (model.config._attn_implementation, math.inf))
    forced, _ = _score(model, tokenizer, REQUESTS)
    assert calls
    assert any(a.logprobs != pytest.approx(ref, abs=1e-3) for a, ref in zip(forced, reference, strict=True))


def test_a_forward_that_drops_the_mask_fails_the_probe_and_keeps_the_cache_copying_path(tiny_llama: Path) -> None:
    from flipscope.models import LoadOptions, _hf_packed, load_backend, parse_spec

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    original = model.forward

    def careless(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:  # a model that ignores 4D masks
        keep = attention_mask is not None and attention_mask.dim() == 2
        return original(*args, attention_mask=attention_mask if keep else None, **kwargs)

    model.forward = careless
    scores, _ = _score(model, tokenizer, REQUESTS)
    assert _hf_packed._PROBED[model][1] == 0.0
    for a, ref in zip(scores, _reference(model, tokenizer, REQUESTS), strict=True):
        assert a.logprobs == pytest.approx(ref, abs=1e-4)


@pytest.mark.e2e
@pytest.mark.parametrize("task", ["mmlu", "arc_challenge", "arc_easy", "hellaswag", "piqa", "winogrande", "boolq",
                                  "openbookqa", "sciq", "copa", "commonsense_qa", "social_iqa"])  # fmt: skip
def test_every_suite_task_scores_the_same_item_by_item_packed_or_not(task: str) -> None:
    """The bundled model, 0- and 5-shot where the task has examples: the same choice, greedy flags and
    log-likelihoods (float32 rounding) with packed rows as with the cache-copying path."""
    from flipscope.metrics import first_argmax
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks import PromptFormat, item_requests, load_task

    backend = load_backend(parse_spec("bundled:smollm2-135m"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    data = load_task(task, fewshot=5, limit=12, seed=0)
    for shots in (0, 5) if task == "mmlu" else (0,):
        prompts = item_requests(data, PromptFormat("cloze"), shots)
        requests = [r for p in prompts for r in p.requests]
        packed, _ = _score(model, tokenizer, requests, max_batch=8)
        copied, _ = _score(model, tokenizer, requests, max_batch=8, packed=False)
        at = 0
        for prompt in prompts:
            n = len(prompt.requests)
            a = [v for s in packed[at : at + n] for v in s.logprobs]
            b = [v for s in copied[at : at + n] for v in s.logprobs]
            assert first_argmax(tuple(a)) == first_argmax(tuple(b))
            assert a == pytest.approx(b, abs=2e-4)
            assert [s.greedy for s in packed[at : at + n]] == [s.greedy for s in copied[at : at + n]]
            at += n


def test_a_window_every_row_fits_in_is_probed_and_packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Window 256: the probe runs on the sliding-window model and agrees, rows are packed, the numbers are the plain
    passes'; the cache-copying path batches rows too (no padded row can pass the window)."""
    from flipscope.models import LoadOptions, _hf_packed, load_backend, parse_spec
    from flipscope.models._hf_score import PrefixScorer

    folder = _sliding_model(tmp_path / "mistral", window=256)
    backend = load_backend(parse_spec(f"hf:{folder}"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    calls = _counting(monkeypatch)
    scores, _ = _score(model, tokenizer, REQUESTS)
    assert calls and _hf_packed._PROBED[model][1] == 256
    copying = PrefixScorer(model, tokenizer, "cpu", label="x", max_batch=16, packed=False)
    copied = copying.score(REQUESTS)
    assert copying.rows_per_pass == 16
    for a, b, ref in zip(scores, copied, _reference(model, tokenizer, REQUESTS), strict=True):
        assert a.logprobs == pytest.approx(ref, rel=1e-6, abs=1e-5)
        assert b.logprobs == pytest.approx(ref, rel=1e-6, abs=1e-5)


def test_windows_applied_inside_attention_and_batch_dependent_rotary_bound_the_packed_rows() -> None:
    """GPT-Neo's local layers apply their window by key index inside attention (no sliding_window in the config);
    longrope and dynamic rotary scaling switch frequencies for the whole batch past the original context."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig, LlamaForCausalLM

    from flipscope.models._hf_packed import configured_limit, window

    neo = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, window_size=16,
                                         attention_types=[[["global", "local"], 1]]))  # fmt: skip
    assert window(neo) == 16
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    assert configured_limit(LlamaForCausalLM(LlamaConfig(**small))) == math.inf
    dynamic = LlamaConfig(**small, max_position_embeddings=512, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert configured_limit(LlamaForCausalLM(dynamic)) == 512
    assert torch.get_default_dtype() == torch.float32


def test_an_empty_context_is_refused_by_name(tiny_llama: Path) -> None:
    from flipscope.errors import FlipscopeError
    from flipscope.models import LoadOptions, load_backend, parse_spec

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu"))
    model, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    for packed in (True, False):
        with pytest.raises(FlipscopeError, match="request 1 has an empty context"):
            _score(model, tokenizer, [REQUESTS[0], ScoreRequest("", "", (" a b",))], packed=packed)
