"""The OpenAI-compatible backend against a fault-injecting local server: retries, refusals, no silent numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_server import FakeServer, serve
from flipscope.errors import FlipscopeError
from flipscope.models.base import Decoding, GenRequest
from flipscope.models.openai_http import HTTPSettings
from flipscope.models.openai_server import OpenAIBackend
from flipscope.tasks import ScoreRequest

FAST = HTTPSettings(timeout=0.5, retries=2, backoff=0.01, concurrency=2)
REQUESTS = [
    ScoreRequest("Header.\n\n", "Question: which?\nAnswer:", (" a", " much longer words here")),
    ScoreRequest("", "Q2?\nAnswer:", (" yes", " no")),
]


def backend(url: str, settings: HTTPSettings = FAST) -> OpenAIBackend:
    return OpenAIBackend(url, "fake-model", settings, f"openai:{url}#fake-model")


def test_scores_sum_the_option_tokens_only() -> None:
    with serve(FakeServer()) as url:
        scores = backend(url).score(REQUESTS)
    assert scores[0].logprobs == (-1.0, pytest.approx(-0.5 * (5 + 7 + 6 + 5)))
    assert scores[0].n_tokens == (1, 4) and scores[1].logprobs == (-2.0, -1.5)


@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "truncated"])
def test_transient_faults_are_retried_to_success(fault: str) -> None:
    fake = FakeServer([fault, fault])  # two failures, then fine: within 2 retries
    with serve(fake) as url:
        client = backend(url)
        fake.script = [fault, fault]
        scores = client.score(REQUESTS[1:])
    assert scores[0].logprobs == (-2.0, -1.5)


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "truncated"])
def test_persistent_faults_fail_with_a_clear_message(fault: str) -> None:
    fake = FakeServer()
    with serve(fake) as url:
        client = backend(url)
        fake.script = [fault] * 10
        with pytest.raises(FlipscopeError, match=r"failed 3 times; last: "):
            client.score(REQUESTS[1:])


def test_a_client_error_is_not_retried() -> None:
    fake = FakeServer()
    with serve(fake) as url:
        client = backend(url)
        fake.script = ["404"]
        with pytest.raises(FlipscopeError, match="answered HTTP 404"):
            client.score(REQUESTS[1:])
        assert len(fake.requests) == 4  # the three probe requests and the one refused request


def test_a_server_without_prompt_logprobs_is_refused_not_scored() -> None:
    with serve(FakeServer(logprobs=False)) as url:
        client = backend(url)
        assert not client.info.capabilities.multiple_choice
        with pytest.raises(FlipscopeError, match="chance-level"):
            client.score(REQUESTS)


def test_a_server_whose_prompt_logprobs_are_shifted_is_refused() -> None:
    """Echoed log-probs read one position late (llama-cpp-python 0.3.36's server) disagree with generation."""
    with serve(FakeServer(shift=True)) as url:
        client = backend(url)
        assert not client.info.capabilities.multiple_choice
        with pytest.raises(FlipscopeError, match="disagree with its own generation"):
            client.score(REQUESTS)


def test_top_k_asks_for_20_alternatives_then_5_where_the_server_allows_no_more() -> None:
    fake = FakeServer(max_logprobs=5)
    with serve(fake) as url:
        client = backend(url)
        caps = client.info.capabilities
        assert caps.multiple_choice and caps.rows == "topk" and caps.topk == 2  # the fake names 2 per token
        assert [r["logprobs"] for r in fake.requests[:2]] == [20, 5]
        seen = []
        client.score(REQUESTS[:1], rows=lambda i, o, r: seen.append((i, o, r)))
    assert [(i, o, len(r)) for i, o, r in seen] == [(0, 0, 1), (0, 1, 4)]  # option tokens only
    assert seen[1][2].tokens[0] == {" much": -2.5, " x": -9.0}


def test_logprobs_missing_mid_run_stop_the_run() -> None:
    fake = FakeServer()
    with serve(fake) as url:
        client = backend(url)
        fake.script = ["nologprobs"]
        with pytest.raises(FlipscopeError, match="carried no prompt log-probabilities"):
            client.score(REQUESTS[1:])


def test_api_key_comes_from_the_environment_and_is_never_stored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mc_file: Path
) -> None:
    import flipscope

    monkeypatch.setenv("FLIPSCOPE_API_KEY", "sk-secret-123")
    fake = FakeServer()
    with serve(fake) as url:
        result = flipscope.compare(f"openai:{url}#fake-model", [f"openai:{url}#other"], tasks=[str(mc_file)],
                                   out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
        chat = backend(url).generate([GenRequest("hello", chat=True)], Decoding())
    assert [g.text for g in chat] == ["fake answer"]
    assert all(h.get("Authorization") == "Bearer sk-secret-123" for h in fake.headers)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert b"sk-secret-123" not in path.read_bytes()
    summary = next(iter(result.summary.values()))
    assert summary[next(iter(summary))].flips == 0.0  # the same fake model twice


def test_spec_errors() -> None:
    from flipscope.models import load_backend, parse_spec
    from flipscope.models.openai_server import parse_server

    urls, model, settings = parse_server("http://h:1/v1/#m-7b,concurrency=8,timeout=120,retries=2")
    assert (urls, model, settings.concurrency, settings.timeout, settings.retries) == (
        ["http://h:1/v1"],
        "m-7b",
        8,
        120,
        2,
    )
    with pytest.raises(FlipscopeError, match="server option 'threads=2'"):
        parse_server("http://h:1/v1#m,threads=2")
    with pytest.raises(FlipscopeError, match="server option 'concurrency=0'"):
        parse_server("http://h:1/v1#m,concurrency=0")

    with pytest.raises(FlipscopeError, match="openai:<base_url>#<model>"):
        load_backend(parse_spec("openai:http://127.0.0.1:9/v1"))
    with pytest.raises(FlipscopeError, match="cannot be compressed"):
        load_backend(parse_spec("openai:http://127.0.0.1:9/v1#m+rtn:w8"))


def test_kld_refuses_a_server_and_says_why(tmp_path: Path) -> None:
    import flipscope

    corpus = tmp_path / "text.txt"
    corpus.write_text("Some text to score. " * 50)
    with serve(FakeServer()) as url, pytest.raises(FlipscopeError, match=r"needs full-vocabulary.*only its top-k"):
        flipscope.kld(f"openai:{url}#fake-model", [f"openai:{url}#other"], corpus=str(corpus), ctx=32,
                      out=tmp_path / "kld", cache_dir=tmp_path / "cache")  # fmt: skip


def test_generation_through_completions_and_chat_and_a_server_that_cannot() -> None:
    from flipscope.models.base import StopReason

    fake = FakeServer()
    with serve(fake) as url:
        server = backend(url)  # probes the server first
        made = server.generate([GenRequest("Q: 2+2?\nA:"), GenRequest("hi", chat=True)],
                               Decoding(max_new_tokens=5, stop=("Q:",)))  # fmt: skip
        assert [g.text for g in made] == [" ok", "fake answer"]
        assert made[0].stop_reason is StopReason.LENGTH
        sent = next(r for r in fake.requests if r.get("prompt") == "Q: 2+2?\nA:")
        assert sent["stop"] == ["Q:"] and sent["max_tokens"] == 5 and sent["temperature"] == 0.0
        sampled = Decoding(max_new_tokens=5, temperature=0.7, seed=3)
        server.generate([GenRequest(f"item {i}") for i in range(4)], sampled)
        seeds = {r["prompt"]: r["seed"] for r in fake.requests if str(r.get("prompt", "")).startswith("item ")}
        assert [seeds[f"item {i}"] for i in range(4)] == [sampled.request_seed(i) for i in range(4)]
        assert len(set(seeds.values())) == 4  # each item its own random stream, not the draw's one seed
        fake.script = ["notext"]
        with pytest.raises(FlipscopeError, match="without generated text"):
            server.generate([GenRequest("x")], Decoding())
