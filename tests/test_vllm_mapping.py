"""vLLM's prompt_logprobs → option log-likelihoods, on outputs shaped as vLLM documents them (no GPU needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from flipscope.errors import FlipscopeError
from flipscope.models.vllm_engine import VLLMLayout, option_logprob, option_topk, parse_location


@dataclass
class Logprob:  # vllm.logprobs.Logprob's fields
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def test_option_logprob_sums_the_option_positions_only() -> None:
    ids = [11, 12, 13, 14, 15]
    # position 0 is None; each dict holds the actual token (and, with prompt_logprobs=k, the top-k others)
    prompt_logprobs = [None, {12: Logprob(-1.0, 3), 7: Logprob(-0.5, 1)}, {13: Logprob(-2.0, 1)},
                       {14: Logprob(-0.25, 2), 9: Logprob(-0.1, 1)}, {15: Logprob(-0.75, 1)}]  # fmt: skip
    assert option_logprob(prompt_logprobs, ids, start=3) == pytest.approx(-1.0)
    assert option_logprob(prompt_logprobs, ids, start=1) == pytest.approx(-4.0)
    plain = [None, {12: -1.0}, {13: -2.0}, {14: -0.25}, {15: -0.75}]  # older versions: floats
    assert option_logprob(plain, ids, start=2) == pytest.approx(-3.0)


def test_top_k_of_the_option_positions_named_by_text() -> None:
    pieces = [f"<{i}>" for i in range(16)]
    prompt_logprobs = [None, {12: Logprob(-1.0, 3), 7: Logprob(-0.5, 1)}, {13: Logprob(-2.0, 1), 4: Logprob(-3.0, 2)},
                       {14: Logprob(-0.25, 2), 9: Logprob(-0.1, 1)}]  # fmt: skip
    rows = option_topk(prompt_logprobs, 2, pieces)
    assert rows is not None and rows.tokens == ({"<13>": -2.0, "<4>": -3.0}, {"<14>": -0.25, "<9>": -0.1})
    assert option_topk([None, None], 1, pieces) is None


def test_missing_prompt_logprobs_are_an_error_not_a_number() -> None:
    with pytest.raises(FlipscopeError, match="no prompt log-probabilities"):
        option_logprob(None, [1, 2], start=1)
    with pytest.raises(FlipscopeError, match="position 1"):
        option_logprob([None, {5: Logprob(-1.0)}], [1, 2], start=1)


def test_location_options() -> None:
    assert parse_location("/models/llama#tp=4") == VLLMLayout("/models/llama", 4)
    assert parse_location("org/name") == VLLMLayout("org/name")
    assert parse_location("org/name#tp=4,pp=2,executor=ray") == VLLMLayout("org/name", 4, 2, "ray")
    bad_ones = ("org/name#pp=0", "org/name#executor=slurm", "org/name#tp=2,tp=4", "org/name#dp=2", "org/name#tp=x",
                "org/name,pp=2", "org/name#executor=external_launcher")  # fmt: skip
    for bad in bad_ones:
        with pytest.raises(FlipscopeError, match="vllm:<model>"):
            parse_location(bad)


def test_a_layout_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """What vLLM's ``LLM`` is given for a tensor × pipeline parallel model on Ray (vLLM cannot be installed here: a
    stand-in module records the arguments)."""
    import sys
    import types

    from flipscope.models import load_backend, parse_spec

    given: dict[str, object] = {}

    class Stop(Exception):
        pass

    def llm(**kwargs: object) -> None:
        given.update(kwargs)
        raise Stop

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=llm, __version__="stand-in"))
    with pytest.raises(Stop):
        load_backend(parse_spec("vllm:org/llama-70b#tp=4,pp=2,executor=ray"))
    assert {k: given[k] for k in ("model", "tensor_parallel_size", "pipeline_parallel_size")} == {
        "model": "org/llama-70b", "tensor_parallel_size": 4, "pipeline_parallel_size": 2}  # fmt: skip
    assert given["distributed_executor_backend"] == "ray"
    given.clear()
    with pytest.raises(Stop):
        load_backend(parse_spec("vllm:org/small"))
    assert given["tensor_parallel_size"] == 1 and "distributed_executor_backend" not in given  # vLLM's own choice


def test_missing_vllm_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from flipscope.models import load_backend, parse_spec

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(FlipscopeError, match="pip install vllm"):
        load_backend(parse_spec("vllm:org/name"))
