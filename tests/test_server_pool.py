"""Pools of OpenAI-compatible servers (``openai:http://a/v1|http://b/v1#model``) against fault-injecting local
servers: requests spread over the members, a member failing mid-run retired and its requests sent again, every
member failing named, and a pool whose members serve different models refused before anything is scored."""

from __future__ import annotations

import contextlib
import logging

import pytest

from fake_server import FakeServer, serve
from flipscope.errors import FlipscopeError
from flipscope.models import load_backend, parse_spec
from flipscope.models.openai_http import HTTPSettings
from flipscope.models.openai_server import OpenAIBackend, parse_location, parse_server
from flipscope.tasks import ScoreRequest

FAST = HTTPSettings(timeout=0.5, retries=1, backoff=0.01, concurrency=2)
# prompts of different lengths, so every item has its own scores: a request answered twice or lost would show
REQUESTS = [ScoreRequest("", f"Question {'x ' * i}{i}?\nAnswer:", (" yes", f" no {'z ' * (i % 5)}")) for i in range(40)]


def pool(*urls: str) -> OpenAIBackend:
    return OpenAIBackend(list(urls), "fake-model", FAST, "openai:pool#fake-model")


def scored(fake: FakeServer) -> int:
    """Scoring requests a fake answered (its probe's three aside)."""
    return sum(1 for r in fake.requests if r.get("echo") and r.get("prompt", "").startswith("Question"))


@contextlib.contextmanager
def servers(*fakes: FakeServer):
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve(f)) for f in fakes]


def test_a_pool_spreads_requests_and_scores_as_one_server_does() -> None:
    a, b, alone = FakeServer(), FakeServer(), FakeServer()
    with servers(a, b, alone) as (url_a, url_b, url_alone):
        single = OpenAIBackend(url_alone, "fake-model", FAST, "one").score(REQUESTS)
        pooled = pool(url_a, url_b).score(REQUESTS)
    assert pooled == single
    assert scored(a) > 0 and scored(b) > 0 and scored(a) + scored(b) == 2 * len(REQUESTS)  # two options each


def test_a_member_failing_mid_run_is_retired_and_its_requests_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    a, b, alone = FakeServer(), FakeServer(), FakeServer()
    with servers(a, b, alone) as (url_a, url_b, url_alone):
        single = OpenAIBackend(url_alone, "fake-model", FAST, "one").score(REQUESTS)
        backend = pool(url_a, url_b)
        b.script = ["ok"] * 6 + ["500"] * 10_000  # six answers, then it fails for good
        with caplog.at_level(logging.WARNING):
            pooled = backend.score(REQUESTS)
    assert pooled == single  # every item scored once, from the answers that came back whole
    assert scored(b) > 0 and f"server {url_b} retired" in caplog.text
    assert scored(a) == 2 * len(REQUESTS) - 6  # the rest, including those b failed on, went to a


def test_every_member_failing_is_one_error_naming_each() -> None:
    a, b = FakeServer(), FakeServer()
    with servers(a, b) as (url_a, url_b):
        backend = pool(url_a, url_b)
        a.script, b.script = ["503"] * 10_000, ["500"] * 10_000
        with pytest.raises(FlipscopeError, match="every server of the pool failed") as caught:
            backend.score(REQUESTS[:4])
    assert url_a in str(caught.value) and url_b in str(caught.value)


@pytest.mark.parametrize(
    ("odd", "message"),
    [
        (
            FakeServer(models=["another-model"]),
            r"does not list 'fake-model' at /models \(it lists \['another-model'\]\)",
        ),
        (FakeServer(shift=True), "answers the probe otherwise"),  # prompt log-probs one position late: refused
        (FakeServer(generated_at=-1.9), "answers the probe otherwise"),  # its echo disagrees: refused, not usable
    ],
)
def test_members_that_disagree_are_refused_before_scoring(odd: FakeServer, message: str) -> None:
    good = FakeServer()
    with servers(good, odd) as (url_good, url_odd), pytest.raises(FlipscopeError, match=message) as caught:
        pool(url_good, url_odd)
    assert f"do not serve one model: {url_odd} " in str(caught.value)


def test_the_same_token_at_another_log_prob_is_another_model() -> None:
    """Both members refuse multiple choice alike (echo one position late) and generate the same token, one at
    −1.5 and one at −1.9 nats: only the generated log-prob tells the two engines apart."""
    a, b = FakeServer(shift=True), FakeServer(shift=True, generated_at=-1.9)
    with servers(a, b) as urls, pytest.raises(FlipscopeError, match=r"at log-prob -1\.9") as caught:
        pool(*urls)
    assert f"do not serve one model: {urls[1]} answers the probe otherwise" in str(caught.value)


def test_members_that_list_no_models_or_answer_within_tolerance_are_accepted() -> None:
    """A server without /models ids is not compared on them; a log-prob within the probe's tolerance is one model."""
    a, b, c = FakeServer(), FakeServer(models=[]), FakeServer(generated_at=-1.52)
    with servers(a, b, c) as urls:
        assert pool(*urls).score(REQUESTS[:2]) == pool(urls[0]).score(REQUESTS[:2])


def test_pool_specs() -> None:
    urls, model, settings = parse_server("http://b:1/v1/|http://a:1/v1#m,concurrency=3")
    assert (urls, model, settings.concurrency) == (["http://b:1/v1", "http://a:1/v1"], "m", 3)
    assert parse_location("http://b:1/v1|http://a:1/v1#m") == ("http://a:1/v1|http://b:1/v1", "m")  # any order
    with pytest.raises(FlipscopeError, match="names a server twice"):
        parse_server("http://a:1/v1|http://a:1/v1/#m")
    with pytest.raises(FlipscopeError, match="cannot read server spec"):
        parse_server("http://a:1/v1|a:1/v1#m")


def test_a_pool_spec_loads_through_the_registry() -> None:
    a, b = FakeServer(), FakeServer()
    with servers(a, b) as (url_a, url_b):
        backend = load_backend(parse_spec(f"openai:{url_a}|{url_b}#fake-model,retries=1"))
        assert backend.info.details["server"] == "|".join(sorted([url_a, url_b]))
        assert backend.score(REQUESTS[:6]) == pool(url_a, url_b).score(REQUESTS[:6])
