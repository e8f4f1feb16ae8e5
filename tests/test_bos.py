"""One BOS rule for every transformers-tokenised path: option scoring, kld's windows and token counts follow what
the tokenizer itself does — through ``add_bos_token``, through its post-processor alone (the Llama-3 family), or
not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from flipscope.models import load_backend, parse_spec
from flipscope.models.hf_common import bos_prefix
from flipscope.tasks import ScoreRequest
from tests.conftest import make_tiny_llama


def with_post_processor_bos(folder: Path) -> None:
    """Re-save the folder's tokenizer so that it adds BOS through its post-processor only (add_bos_token False)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def llamas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    plain = make_tiny_llama(tmp_path_factory.mktemp("no-bos"))
    post = tmp_path_factory.mktemp("post-bos") / "m"
    shutil.copytree(plain, post)
    with_post_processor_bos(post)
    return {"none": plain, "post-processor": post}


def manual_loglik(folder: Path, ids: list[int], option: list[int]) -> float:
    """Brute force: one forward pass over context + option; the sum of the option tokens' log-probs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    seq = torch.tensor([ids + option])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(seq).logits[0].float(), -1)  # [L, V]
    return float(sum(logprobs[len(ids) - 1 + j, t] for j, t in enumerate(option)))


@pytest.mark.parametrize("kind", ["none", "post-processor"])
def test_scoring_kld_and_counts_follow_the_tokenizer(llamas: dict[str, Path], kind: str) -> None:
    folder = llamas[kind]
    backend = load_backend(parse_spec(f"hf:{folder}"))
    tok = backend.tokenizer  # type: ignore[attr-defined]
    assert getattr(tok, "add_bos_token", False) is False  # the old attribute rule saw no BOS in either case
    bos = bos_prefix(tok)
    assert bos == ([tok.bos_token_id] if kind == "post-processor" else [])
    assert bos == list(tok.encode("x"))[: len(bos)]  # what the tokenizer itself does
    request = ScoreRequest("The planets circle the sun.", " Paris is the capital of", (" France.", " Italy is"))
    scored = backend.score([request])[0]
    context = bos + list(tok.encode(request.prefix + request.prompt, add_special_tokens=False))
    for option, got in zip(request.continuations, scored.logprobs, strict=True):
        expected = manual_loglik(folder, context, list(tok.encode(option, add_special_tokens=False)))
        assert got == pytest.approx(expected, abs=1e-4)
    ids, corpus_bos = backend.encode_corpus("The planets circle the sun.")  # type: ignore[attr-defined]
    assert corpus_bos == (bos[0] if bos else None) and ids == list(
        tok.encode("The planets circle the sun.")[len(bos) :]
    )
    assert backend.count_tokens("The sun.") == len(tok.encode("The sun."))
    backend.close()
