"""llama-cpp-python's OpenAI-compatible server on loopback (its ``[server]`` extra) through ``openai:``: multiple
choice, generation and top-k approximate token KL against the same file run locally through ``gguf:``, and the
probe that refuses a server whose echoed log-probabilities are wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flipscope.errors import FlipscopeError
from flipscope.models.base import Decoding, GenRequest
from llama_server import serve_gguf

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed (CI installs it)")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """The bundled model's float32 GGUF as it is: SmolLM2 starts inputs without a BOS token."""
    from flipscope.models.gguf_file import bundled_gguf

    with serve_gguf(bundled_gguf("smollm2-135m"), "smollm2") as url:
        yield url


@pytest.fixture(scope="module")
def bos_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights with ``add_bos_token`` on, standing in for the many models whose tokenizer starts every
    input with BOS (Llama, Mistral, Gemma): llama-cpp-python's server aligns echoed log-probs right for those."""
    from flipscope.models.gguf_file import bundled_gguf, dequantized_copy

    out = tmp_path_factory.mktemp("bos") / "smollm2-135m-bos.gguf"
    dequantized_copy(bundled_gguf("smollm2-135m"), out, metadata={"tokenizer.ggml.add_bos_token": True})
    return out


@pytest.fixture(scope="module")
def bos_server(bos_gguf: Path) -> Iterator[str]:
    with serve_gguf(bos_gguf, "smollm2-bos") as url:
        yield url


def test_real_server_multiple_choice_generation_and_top_k_kl(bos_gguf: Path, bos_server: str, tmp_path: Path) -> None:
    """The file through llama.cpp in-process (gguf:, full rows) vs the same file behind the server (openai:,
    prompt log-probs + top-20): the same answers, choice KL at the engines' noise floor, top-k token KL tiny."""
    import flipscope
    from flipscope.models import load_backend, parse_spec

    spec = f"openai:{bos_server}#smollm2-bos"
    server = load_backend(parse_spec(spec))
    caps = server.info.capabilities
    assert caps.multiple_choice and caps.rows == "topk" and caps.topk == 20
    result = flipscope.compare(f"gguf:{bos_gguf}", [spec], tasks=["mmlu"], limit=8, out=tmp_path / "run",
                               cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary[spec]["mmlu"]
    assert s.n == 8 and s.flips == 0.0 and s.all_flips == 0.0
    assert s.choice_kl_mean is not None and s.choice_kl_mean < 1e-4
    assert s.token_kl_mean is not None and 0.0 <= s.token_kl_mean < 1e-3
    assert result.run.candidates[0].details["token_kl"] == "top-k approximate (lower bound)"
    assert any("top-k approximate" in n for n in result.run.notes)
    answer = server.generate([GenRequest("Name a planet.", chat=True)], Decoding(max_new_tokens=8))
    assert answer[0].text.strip()
    # the reverse: the server as baseline (its top-20 stored by text), the in-process engine as candidate
    back = flipscope.compare(spec, [f"gguf:{bos_gguf}"], tasks=["mmlu"], limit=4, out=tmp_path / "back",
                             cache_dir=tmp_path / "cache")  # fmt: skip
    r = back.summary[f"gguf:{bos_gguf}"]["mmlu"]
    assert r.flips == 0.0 and r.token_kl_mean is not None and r.token_kl_mean < 1e-3


def test_real_server_is_probed_refused_for_multiple_choice_and_still_chats(llama_server: str, tmp_path: Path) -> None:
    """llama-cpp-python 0.3.36's server echoes each prompt token's log-prob one position late (checked against the
    local engine in the next test); flipscope's probe catches it and refuses to score instead of giving numbers."""
    import flipscope
    from flipscope.models import load_backend, parse_spec

    server = load_backend(parse_spec(f"openai:{llama_server}#smollm2"))
    assert not server.info.capabilities.multiple_choice
    with pytest.raises(FlipscopeError, match="disagree with its own generation"):
        flipscope.compare("gguf:smollm2-135m", [f"openai:{llama_server}#smollm2"], tasks=["mmlu"], limit=5,
                          out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    answer = server.generate(
        [GenRequest("Name a planet.", chat=True), GenRequest("Mars is a")], Decoding(max_new_tokens=8)
    )
    assert answer[0].text.strip() and answer[1].text.strip()


def test_real_server_echo_logprobs_are_the_local_engines_one_position_late(llama_server: str) -> None:
    import numpy as np

    from flipscope.models import load_backend, parse_spec
    from flipscope.models.gguf import log_softmax
    from flipscope.models.openai_http import HTTPSettings, post_json

    text = "Question: What is the capital of France?\nAnswer: Paris"
    body = {"model": "smollm2", "prompt": text, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    served = post_json(llama_server, "/completions", body, HTTPSettings())["choices"][0]["logprobs"]["token_logprobs"]
    local = load_backend(parse_spec("gguf:smollm2-135m"))
    ids = local._tokens(text)  # type: ignore[attr-defined]
    local.llm.reset()  # type: ignore[attr-defined]
    local.llm.eval(ids)  # type: ignore[attr-defined]
    lp = log_softmax(np.array(local.llm.scores[: len(ids)]))  # type: ignore[attr-defined]
    local.close()
    right = [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]
    late = [float(lp[i, ids[i]]) for i in range(1, len(ids))]
    # 1e-2: the local engine runs with flash attention, the server without (differences up to 4e-3 seen)
    assert served[1 : len(ids)] == pytest.approx(late, abs=1e-2)
    assert served[1 : len(ids)] != pytest.approx(right, abs=0.1)


def test_a_pool_of_two_real_servers_one_killed_mid_run(bos_gguf: Path, bos_server: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Two llama-cpp-python servers of one file as one ``openai:`` pool; the second is killed (SIGKILL) once it has
    answered five options: it is retired, the rest go to the first, and the records equal a one-server run's."""
    import logging
    import signal
    import threading

    import pandas as pd

    import flipscope
    import flipscope.models.server_pool as server_pool

    procs: list[Any] = []
    with serve_gguf(bos_gguf, "smollm2-bos", procs=procs) as second:
        one = flipscope.compare(f"gguf:{bos_gguf}", [f"openai:{bos_server}#smollm2-bos"], tasks=["arc_easy"],
                                limit=12, out=tmp_path / "one", cache_dir=tmp_path / "cache")  # fmt: skip
        real, lock = server_pool.post_json, threading.Lock()
        answered, killed = [0], threading.Event()

        def killing(url: str, path: str, body: dict[str, Any], settings: Any) -> dict[str, Any]:
            with lock:
                if url == second and answered[0] >= 5 and not killed.is_set():
                    procs[0].kill()
                    procs[0].wait()
                    killed.set()
            reply = real(url, path, body, settings)
            with lock:
                answered[0] += url == second
            return reply

        monkeypatch.setattr(server_pool, "post_json", killing)
        pool = f"openai:{bos_server}|{second}#smollm2-bos,retries=1"
        with caplog.at_level(logging.WARNING):
            pooled = flipscope.compare(f"gguf:{bos_gguf}", [pool], tasks=["arc_easy"], limit=12,
                                       out=tmp_path / "pool", cache_dir=tmp_path / "cache")  # fmt: skip
        assert killed.is_set() and procs[0].returncode == -signal.SIGKILL  # killed mid-run, after five answers
    assert f"server {second} retired" in caplog.text
    columns = ["task", "item_id", "role", "choice", "choice_logprobs"]
    frames = [pd.read_parquet(r.out / "records.parquet")[columns].sort_values(columns[:3]).reset_index(drop=True)
              for r in (one, pooled)]  # fmt: skip
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert len(frames[0]) == 24 and (frames[0].role == "candidate").sum() == 12  # the baseline's rows: one pass
