"""The llama.cpp backend on the bundled model's GGUF: multiple choice, KL, generation, llama.cpp quant types, and
the cross-backend noise floor against the transformers backend on the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipscope.errors import FlipscopeError

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it: see .ci/run)")

pytestmark = pytest.mark.e2e


def test_float32_copy_and_original_file_types() -> None:
    from flipscope.models.gguf_file import bundled_gguf, file_type

    assert file_type(bundled_gguf("smollm2-135m")) == 0  # ALL_F32
    assert file_type(bundled_gguf("smollm2-135m", original=True)) == 3  # MOSTLY_Q4_1


def test_requantizing_needs_the_explicit_flag() -> None:
    from flipscope.models import load_backend, parse_spec

    with pytest.raises(FlipscopeError, match=r"already quantized.*,requant"):
        load_backend(parse_spec("gguf:smollm2-135m@original+ggml:Q4_K_M"))
    backend = load_backend(parse_spec("gguf:smollm2-135m@original+ggml:Q4_K_M,requant"))
    assert backend.info.details["source_file_type"] == 3
    backend.close()
    with pytest.raises(FlipscopeError, match=r"takes one llama\.cpp quantization"):
        load_backend(parse_spec("gguf:smollm2-135m+rtn:w8"))
    with pytest.raises(FlipscopeError, match="applies to gguf: models only"):
        load_backend(parse_spec("bundled:smollm2-135m+ggml:Q4_K_M"))


def test_gguf_and_hf_backends_agree_on_the_same_weights(tmp_path: Path) -> None:
    """The noise floor between engines: bundled (transformers, float32) vs its float32 GGUF in llama.cpp."""
    import flipscope

    result = flipscope.compare("bundled:smollm2-135m", ["gguf:smollm2-135m"], tasks=["mmlu"], limit=100,
                               out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary["gguf:smollm2-135m"]["mmlu"]
    assert s.n == 100
    assert s.flips <= 0.01 and s.choice_kl_mean < 1e-3
    assert s.token_kl_mean is not None and s.token_kl_mean < 1e-3  # same vocabulary: token KL across engines


def test_gguf_quant_types_mc_kld_and_generation(tmp_path: Path) -> None:
    import flipscope
    from flipscope.models import load_backend, parse_spec

    corpus = tmp_path / "text.txt"
    from flipscope.compress._calibration import calibration_text

    corpus.write_text(calibration_text()[:20_000])
    result = flipscope.kld("gguf:smollm2-135m", ["+ggml:Q8_0", "+ggml:Q2_K"], corpus=str(corpus), ctx=128,
                           max_windows=3, out=tmp_path / "kld", cache_dir=tmp_path / "cache")  # fmt: skip
    q8 = result.summary["gguf:smollm2-135m+ggml:Q8_0"].kl_mean.value
    q2 = result.summary["gguf:smollm2-135m+ggml:Q2_K"].kl_mean.value
    assert 0 < q8 < q2
    backend = load_backend(parse_spec("gguf:smollm2-135m"))
    answer = backend.generate(["What is the capital of France?"], max_tokens=12)  # type: ignore[attr-defined]
    backend.close()
    assert answer[0].strip()


@pytest.fixture(scope="module")
def llama_server():  # type: ignore[no-untyped-def]
    """llama-cpp-python's OpenAI-compatible server on loopback, serving the bundled model's float32 GGUF."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    from flipscope.models.gguf_file import bundled_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf("smollm2-135m")),
               "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true",
               "--n_ctx", "2048", "--seed", "0", "--verbose", "false"]  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's lifetime; a pipe would fill and stall it
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.seek(0)
                pytest.fail(f"llama_cpp.server did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_real_server_is_probed_refused_for_multiple_choice_and_still_chats(llama_server: str, tmp_path: Path) -> None:
    """llama-cpp-python 0.3.36's server echoes each prompt token's log-prob one position late (checked against the
    local engine in the next test); flipscope's probe catches it and refuses to score instead of giving numbers."""
    import flipscope
    from flipscope.models import load_backend, parse_spec

    server = load_backend(parse_spec(f"openai:{llama_server}#smollm2"))
    assert not server.capabilities.prompt_logprobs  # type: ignore[attr-defined]
    with pytest.raises(FlipscopeError, match="disagree with its own generation"):
        flipscope.compare("gguf:smollm2-135m", [f"openai:{llama_server}#smollm2"], tasks=["mmlu"], limit=5,
                          out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    answer = server.generate(["Name a planet."], max_tokens=8)  # type: ignore[attr-defined]
    assert answer[0].strip()


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
    assert served[1 : len(ids)] == pytest.approx(late, abs=1e-3)
    assert served[1 : len(ids)] != pytest.approx(right, abs=0.1)
