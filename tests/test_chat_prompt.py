"""One rule for the ids a chat request gives a model: exactly what the tokenizer's own
``apply_chat_template(messages, tokenize=True, add_generation_prompt=True)`` gives (one BOS where the template writes
``{{ bos_token }}``, none added where it does not), in generation, teacher-forced scoring and ``flipscope prompt``;
for a GGUF, the ids llama.cpp feeds for its template. Plain prompts keep the BOS rule of ``bos_prefix``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.models.base import Decoding, GenRequest
from flipscope.models.hf_common import bos_prefix
from flipscope.tasks import ScoreRequest
from tests.conftest import make_tiny_llama
from tests.test_bos import manual_loglik, with_post_processor_bos

#: The Llama-3 family's shape: the template writes BOS itself, and the tokenizer adds it (post-processor) too.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
#: SmolLM2's shape (ChatML): no BOS in the template.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Gemma 3 instruct's template, its structure as the -it release ships it: BOS written by the template, the system
#: message folded into the first user turn, "assistant" named "model".
GEMMA3_IT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
REQUESTS = [
    GenRequest("What is the capital of France?", chat=True),
    GenRequest("And of Italy?", chat=True, system="Answer briefly.", history=(("Capital of Spain?", "Madrid."),)),
]


def set_template(folder: Path, template: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    tok.save_pretrained(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tokenizers: "llama3": BOS from the post-processor and from the template; "smollm2": BOS from
    neither; "post-only": the tokenizer adds BOS but the template writes none."""
    plain = make_tiny_llama(tmp_path_factory.mktemp("tiny"))
    out = {}
    for kind, template, post in (("llama3", LLAMA3_TEMPLATE, True), ("smollm2", CHATML_TEMPLATE, False),
                                 ("post-only", CHATML_TEMPLATE, True)):  # fmt: skip
        folder = tmp_path_factory.mktemp(kind) / "m"
        shutil.copytree(plain, folder)
        if post:
            with_post_processor_bos(folder)
        set_template(folder, template)
        out[kind] = folder
    return out


def template_ids(tokenizer: Any, request: GenRequest) -> list[int]:
    """What the tokenizer itself gives (transformers 5.x returns a BatchEncoding)."""
    out = tokenizer.apply_chat_template(request.messages(), tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def greedy(model: Any, ids: list[int], steps: int) -> list[int]:
    """Brute force: one full forward pass per new token, no cache."""
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            new.append(int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax()))
    return new


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_generation_gives_a_llama3_style_model_one_bos(
    folders: dict[str, Path], continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flipscope.models import _hf_decode

    if not continuous:
        monkeypatch.setattr(_hf_decode, "supported", lambda model: False)
    backend = load_backend(parse_spec(f"hf:{folders['llama3']}"), LoadOptions(device="cpu", batch_size=2))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    bos = tok.bos_token_id
    assert bos_prefix(tok) == [bos]  # the tokenizer adds BOS to plain text
    seen: list[list[int]] = []  # the ids of every forward pass, as the embedding layer receives them
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0][0].tolist()))
    got = backend.generate(REQUESTS[:1], Decoding(max_new_tokens=6))
    hook.remove()
    expected = template_ids(tok, REQUESTS[0])
    assert expected[0] == bos and expected.count(bos) == 1  # the template writes the one BOS
    assert seen[0][:2] == expected[:2] and seen[0].count(bos) == 1  # the model's first input: one BOS
    assert got[0].prompt_tokens == len(expected)
    assert got[0].text == tok.decode(greedy(model, expected, 6), skip_special_tokens=True)
    both = backend.generate(REQUESTS, Decoding(max_new_tokens=6))  # system message and history, in one batch
    assert [g.prompt_tokens for g in both] == [len(template_ids(tok, r)) for r in REQUESTS]
    assert both[1].text == tok.decode(greedy(model, template_ids(tok, REQUESTS[1]), 6), skip_special_tokens=True)
    backend.close()


@pytest.mark.parametrize("kind", ["llama3", "smollm2", "post-only"])
def test_chat_ids_are_the_templates_own_and_plain_prompts_keep_the_bos_rule(
    folders: dict[str, Path], kind: str
) -> None:
    from transformers import AutoTokenizer

    from flipscope.models.hf_common import prompt_ids

    tok = AutoTokenizer.from_pretrained(folders[kind])
    bos = bos_prefix(tok)
    for request in REQUESTS:
        ids = prompt_ids(tok, request, chat=True, bos=bos)
        assert ids == template_ids(tok, request)
        assert ids.count(tok.bos_token_id) == (1 if kind == "llama3" else 0)
    if kind == "smollm2":  # no BOS anywhere: the ids are what the old rule gave
        rendered = tok.apply_chat_template(REQUESTS[1].messages(), tokenize=False, add_generation_prompt=True)
        assert prompt_ids(tok, REQUESTS[1], chat=True, bos=bos) == tok.encode(rendered, add_special_tokens=False)
    plain = GenRequest("The capital of France is")
    assert prompt_ids(tok, plain, chat=True, bos=bos) == bos + tok.encode(plain.prompt, add_special_tokens=False)
    assert prompt_ids(tok, plain, chat=True, bos=bos) == tok.encode(plain.prompt)  # the tokenizer's own BOS rule


def test_teacher_forced_scoring_reads_the_answer_after_the_chat_ids(folders: dict[str, Path]) -> None:
    """MT-Bench's judge-free distances score an answer after ``chat_prompt``: the context must be the chat ids."""
    folder = folders["llama3"]
    backend = load_backend(parse_spec(f"hf:{folder}"))
    tok = backend.tokenizer  # type: ignore[attr-defined]
    answer = " Paris is the capital of France."
    for request in REQUESTS:
        context = backend.chat_prompt(request)  # type: ignore[attr-defined]
        got = backend.score([ScoreRequest("", context, (answer,))])[0].logprobs[0]
        expected = manual_loglik(folder, template_ids(tok, request), tok.encode(answer, add_special_tokens=False))
        assert got == pytest.approx(expected, abs=1e-4)
    backend.close()


def test_a_template_that_cannot_be_scored_as_given_is_refused(folders: dict[str, Path]) -> None:
    """The tokenizer adds BOS but its template writes none: generation gives the template's ids (no BOS), and
    teacher-forced scoring, which would put BOS first, says so instead of scoring another context."""
    backend = load_backend(parse_spec(f"hf:{folders['post-only']}"))
    tok = backend.tokenizer  # type: ignore[attr-defined]
    got = backend.generate(REQUESTS[:1], Decoding(max_new_tokens=2))
    assert got[0].prompt_tokens == len(template_ids(tok, REQUESTS[0]))
    with pytest.raises(FlipscopeError, match="chat template"):
        backend.chat_prompt(REQUESTS[0])  # type: ignore[attr-defined]
    backend.close()


def tokenizer_only(folder: Path, to: Path) -> Path:
    """The folder's tokenizer and config without its weights: ``flipscope prompt`` must not need them."""
    to.mkdir()
    for path in folder.iterdir():
        if path.suffix in (".json", ".jinja", ".txt", ".model") and path.name != "generation_config.json":
            shutil.copy(path, to / path.name)
    assert not list(to.glob("*.safetensors"))
    return to


def test_prompt_command_shows_one_bos(folders: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from flipscope.cli import cli

    folder = tokenizer_only(folders["llama3"], tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(folder)
    runner = CliRunner()
    result = runner.invoke(cli, ["prompt", f"hf:{folder}", "Hello", "--chat", "--system", "Be brief.", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    request = GenRequest("Hello", chat=True, system="Be brief.")
    assert shown["ids"] == template_ids(tok, request) and shown["ids"].count(tok.bos_token_id) == 1
    assert shown["text"] == tok.apply_chat_template(request.messages(), tokenize=False, add_generation_prompt=True)
    assert shown["pieces"] == [tok.decode([i], clean_up_tokenization_spaces=False) for i in shown["ids"]]
    assert shown["pieces"][0] == "<s>"
    plain = json.loads(runner.invoke(cli, ["prompt", f"hf:{folder}", "Hello", "--json"]).output)
    assert plain["ids"] == tok.encode("Hello") and plain["text"] == "Hello"
    table = runner.invoke(cli, ["prompt", f"hf:{folder}", "Hello", "--chat"])
    assert table.exit_code == 0 and "<|start_header_id|>" in table.output and str(tok.bos_token_id) in table.output


def test_prompt_api_refuses_what_it_cannot_show() -> None:
    import flipscope

    with pytest.raises(FlipscopeError, match="openai"):
        flipscope.prompt_tokens("openai:http://127.0.0.1:9/v1#m", "Hello", chat=True)
    with pytest.raises(FlipscopeError, match="does not exist"):
        flipscope.prompt_tokens("hf:/no/such/folder", "Hello")


# --- e2e: the bundled models --------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_gemma3_tokenizer_with_its_instruct_template_gives_one_bos(tmp_path: Path) -> None:
    """The issue's measurement: Gemma 3 270M's tokenizer with Gemma 3 instruct's template. The old rule gave
    [2, 2, 105, 2364, 107, …]; the template's own ids are [2, 105, 2364, 107, …]."""
    from transformers import AutoTokenizer

    import flipscope
    from flipscope.models.bundled import ensure_local
    from flipscope.models.hf_common import prompt_ids

    folder = tmp_path / "gemma3-it"
    tok = AutoTokenizer.from_pretrained(ensure_local("gemma3-270m"))
    tok.chat_template = GEMMA3_IT_TEMPLATE
    tok.save_pretrained(folder)
    shutil.copy(ensure_local("gemma3-270m") / "config.json", folder / "config.json")
    request = GenRequest("Hello", chat=True)
    expected = template_ids(tok, request)
    assert expected[:4] == [2, 105, 2364, 107] and expected.count(2) == 1
    rendered = tok.apply_chat_template(request.messages(), tokenize=False, add_generation_prompt=True)
    assert (bos_prefix(tok) + tok.encode(rendered, add_special_tokens=False))[:5] == [2, 2, 105, 2364, 107]  # old rule
    assert prompt_ids(tok, request, chat=True, bos=bos_prefix(tok)) == expected
    shown = flipscope.prompt_tokens(f"hf:{folder}", "Hello", chat=True)
    assert list(shown.ids) == expected and shown.text.startswith("<bos><start_of_turn>user\nHello")
    assert list(flipscope.prompt_tokens(f"hf:{folder}", "Hello", chat=True, system="Be brief.").ids) == (
        template_ids(tok, GenRequest("Hello", chat=True, system="Be brief."))
    )


@pytest.mark.e2e
def test_bundled_and_gguf_give_the_same_chat_ids() -> None:
    """The same model through transformers and llama.cpp: the same ids for the same chat request (the ids llama.cpp
    feeds through llama-cpp-python's chat handler for the file's template)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it: see .ci/run)")
    import flipscope

    for text, system in (("What is the capital of France?", None), ("Hello", "Be brief.")):
        hf = flipscope.prompt_tokens("bundled:smollm2-135m", text, chat=True, system=system)
        gg = flipscope.prompt_tokens("gguf:smollm2-135m", text, chat=True, system=system)
        assert list(gg.ids) == list(hf.ids) and gg.text == hf.text
        assert gg.pieces == hf.pieces
    plain_hf = flipscope.prompt_tokens("bundled:smollm2-135m", "The capital of France is")
    plain_gg = flipscope.prompt_tokens("gguf:smollm2-135m", "The capital of France is")
    assert list(plain_gg.ids) == list(plain_hf.ids)
    backend = load_backend(parse_spec("gguf:smollm2-135m"))  # what generation feeds: as many prompt tokens
    made = backend.generate([GenRequest("Hello", chat=True, system="Be brief."), GenRequest(plain_gg.text)],
                            Decoding(max_new_tokens=1))  # fmt: skip
    backend.close()
    assert [g.prompt_tokens for g in made] == [len(gg.ids), len(plain_gg.ids)]


@pytest.mark.e2e
def test_llama_cpp_feeds_gemma3_instruct_the_same_ids_as_transformers() -> None:
    """llama.cpp's chat handler for Gemma 3 instruct's template (rendered text tokenised with special tokens and no
    added BOS) gives the ids transformers' own ``apply_chat_template`` gives: one BOS."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it: see .ci/run)")
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from flipscope.models.bundled import load_tokenizer
    from flipscope.models.gguf import llm_prompt
    from flipscope.models.gguf_file import resolve

    tok = load_tokenizer("gemma3-270m")
    tok.chat_template = GEMMA3_IT_TEMPLATE
    llm = llama_cpp.Llama(model_path=str(resolve("gemma3-270m")), vocab_only=True, verbose=False)
    llm.chat_handler = Jinja2ChatFormatter(GEMMA3_IT_TEMPLATE, eos_token="<eos>", bos_token="<bos>").to_chat_handler()
    try:
        for request in (GenRequest("Hello", chat=True), *REQUESTS):
            got = llm_prompt(llm, request)
            assert list(got.ids) == template_ids(tok, request) and got.ids[:2] == (2, 105)
    finally:
        llm.close()
