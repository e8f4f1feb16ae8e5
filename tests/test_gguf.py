"""The llama.cpp backend on the bundled model's GGUF: multiple choice, KL, generation, llama.cpp quant types, and
the cross-backend noise floor against the transformers backend on the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flipscope.errors import FlipscopeError
from flipscope.models.base import Decoding, GenRequest

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
    floor = [n for n in result.run.notes if "noise floor" in n]
    assert len(floor) == 1 and f"flips {s.flips:.1%}" in floor[0] and "bundled → gguf" in floor[0]


def test_gguf_quant_types_mc_kld_and_generation(tmp_path: Path) -> None:
    import flipscope
    from flipscope.models import load_backend, parse_spec

    corpus = tmp_path / "text.txt"
    from flipscope.tasks.corpus import calibration_text

    corpus.write_text(calibration_text()[:20_000])
    result = flipscope.kld("gguf:smollm2-135m", ["+ggml:Q8_0", "+ggml:Q2_K"], corpus=str(corpus), ctx=128,
                           max_windows=3, out=tmp_path / "kld", cache_dir=tmp_path / "cache")  # fmt: skip
    q8 = result.summary["gguf:smollm2-135m+ggml:Q8_0"].kl_mean.value
    q2 = result.summary["gguf:smollm2-135m+ggml:Q2_K"].kl_mean.value
    assert 0 < q8 < q2
    backend = load_backend(parse_spec("gguf:smollm2-135m"))
    chat = [GenRequest("What is the capital of France?", chat=True), GenRequest("The capital of France is")]
    answer = backend.generate(chat, Decoding(max_new_tokens=12))
    backend.close()
    assert answer[0].text.strip() and answer[1].text.strip() and answer[1].new_tokens


def test_gemma_adds_bos_the_same_way_in_bundled_and_gguf(tmp_path: Path) -> None:
    """Gemma 3's tokenizer adds BOS through its post-processor only: bundled: (transformers) and gguf: (llama.cpp)
    must both put it first — in option scoring (0 flips, near-zero KL) and in kld's windows (same ids)."""
    import flipscope
    from flipscope.models import load_backend, parse_spec

    hf, gg = load_backend(parse_spec("bundled:gemma3-270m")), load_backend(parse_spec("gguf:gemma3-270m"))
    text = "The planets circle the sun."
    ids_hf, bos_hf = hf.encode_corpus(text)  # type: ignore[attr-defined]
    ids_gg, bos_gg = gg.encode_corpus(text)  # type: ignore[attr-defined]
    assert bos_hf == bos_gg == 2 and ids_hf == ids_gg
    assert hf.count_tokens(text) == gg.count_tokens(text) == len(ids_hf) + 1
    hf.close()
    gg.close()
    result = flipscope.compare("bundled:gemma3-270m", ["gguf:gemma3-270m"], tasks=["mmlu"], limit=12,
                               out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary["gguf:gemma3-270m"]["mmlu"]
    assert s.flips == 0 and s.choice_kl_mean < 1e-3
    assert s.token_kl_mean is not None and s.token_kl_mean < 1e-2
    corpus = tmp_path / "text.txt"
    corpus.write_text(text * 200)
    kld = flipscope.kld("bundled:gemma3-270m", ["gguf:gemma3-270m"], corpus=str(corpus), ctx=64, max_windows=2,
                        out=tmp_path / "kld", cache_dir=tmp_path / "kcache")  # fmt: skip
    assert kld.summary["gguf:gemma3-270m"].kl_mean.value < 1e-2
    assert kld.summary["gguf:gemma3-270m"].same_top.value > 0.9


def test_kld_context_beyond_the_default_sizes_llama_cpp_for_it() -> None:
    """``kld --ctx`` above the backend's default 4096 tokens: llama.cpp is given that context, and a window of it
    is scored (each decode call's logits only: at most n_batch rows of the vocabulary at a time)."""
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks.corpus import calibration_text, make_windows

    backend: Any = load_backend(parse_spec("gguf:smollm2-135m"), LoadOptions(device="cpu", context=5000))
    assert backend.info.capabilities.max_context >= 5000  # llama.cpp pads n_ctx to a multiple of 256
    ids, bos = backend.encode_corpus(calibration_text())
    (window,) = make_windows(ids, 5000, bos_id=bos, max_windows=1)
    rows = sum(logprobs.shape[0] for logprobs, _ in backend.corpus_logprobs([window], rows=512))
    backend.close()
    assert rows == 5000 - window.first - 1
