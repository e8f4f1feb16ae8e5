"""What every path through transformers shares (the ``hf``/``bundled`` backend, its scorer and decoders, vLLM,
``flipscope prompt``): the tokenizer alone and its rules (BOS, the ids a request becomes), the name of the forward
pass's cache argument, and transformers kept quiet. Nothing here loads weights or imports torch at import time."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models.base import GenRequest, PromptTokens, vocabulary_fingerprint


def tokenizer_fingerprint(tokenizer: Any) -> str:
    return vocabulary_fingerprint(tokenizer.get_vocab().items())


def token_texts(tokenizer: Any, ids: Iterable[int]) -> list[str]:
    """The text of each token id alone (special tokens shown)."""
    return [str(t) for t in tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)]


def tokenizer_pieces(tokenizer: Any, size: int) -> list[str]:
    """The text of each token id alone, for ids 0 … size-1 (ids past the tokenizer's end get "")."""
    known = min(size, len(tokenizer))
    return token_texts(tokenizer, range(known)) + [""] * (size - known)


def has_chat_template(tokenizer: Any) -> bool:
    return tokenizer.chat_template is not None


def quiet_transformers() -> None:
    """Progress goes through flipscope's display; transformers' own bars and notices stay off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(location: str, label: str, *, gguf_file: str | None = None) -> Any:
    """The tokenizer alone of a model folder or hub id (``gguf_file``: of a GGUF file in that folder): no
    weights are loaded."""
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(location, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FlipscopeError(
            f"cannot load the tokenizer of {label!r}: {first}",
            fix="give a folder with the tokenizer's files, or a hub id when the hub is reachable",
        ) from exc


def bos_prefix(tokenizer: Any) -> list[int]:
    """[BOS id] where the tokenizer starts every input with it, else [] — the one BOS rule of every backend that
    tokenises with transformers (the scorer, ``kld``'s corpus windows, vLLM, token counts).

    Asked of the tokenizer itself, by encoding a probe text with and without special tokens: a tokenizer adds BOS
    through ``add_bos_token`` or through its post-processor alone (the Llama-3 family), and only the encoding shows
    both. Contexts and continuations are then encoded without special tokens, the BOS id placed once at the start
    of each context (what the model saw in training and what lm-eval and servers give it)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    try:
        with_special = list(tokenizer.encode("x", add_special_tokens=True))
        without = list(tokenizer.encode("x", add_special_tokens=False))
    except TypeError:  # a tokenizer without special tokens at all
        return []
    return [int(bos)] if with_special[:1] == [bos] and without[:1] != [bos] else []


def context_ids(tokenizer: Any, text: str, bos: list[int]) -> list[int]:
    """A scored context's ids: ``bos`` (``bos_prefix``) and the text's tokens — BOS once: a text that begins with
    it already (a chat template that writes ``{{ bos_token }}``, rendered by ``chat_prompt``) gets no second."""
    ids = list(tokenizer.encode(text, add_special_tokens=False)) if text else []
    return ids if bos and ids[: len(bos)] == bos else bos + ids


def prompt_text(tokenizer: Any, request: GenRequest, chat: bool) -> str:
    """The text a model continues: the chat template around the conversation where asked (a plain transcript where
    the model has no template)."""
    if request.chat and chat:
        return str(tokenizer.apply_chat_template(request.messages(), tokenize=False, add_generation_prompt=True))
    return request.plain()


def prompt_ids(tokenizer: Any, request: GenRequest, *, chat: bool, bos: list[int]) -> list[int]:
    """The token ids a model is given for ``request`` — the one rule of every transformers path (generation, local
    judges, teacher-forced scoring through ``chat_prompt``, ``flipscope prompt``). A chat request, where the model
    has a template: exactly what the tokenizer's own ``apply_chat_template(..., tokenize=True)`` gives, so BOS is
    there once where the template writes it and nowhere where it does not. Anything else: ``bos`` (``bos_prefix``)
    and the text's tokens."""
    if request.chat and chat:
        out = tokenizer.apply_chat_template(request.messages(), tokenize=True, add_generation_prompt=True)
        return [int(i) for i in (out["input_ids"] if hasattr(out, "keys") else out)]  # transformers 5.x: a dict
    return bos + list(tokenizer.encode(request.plain(), add_special_tokens=False))


def tokenizer_prompt(tokenizer: Any, request: GenRequest) -> PromptTokens:
    """What the transformers backend gives a model with this tokenizer for ``request`` (``prompt_ids``, the rule
    ``generate`` follows), with the text it was made from and each id's text."""
    chat = has_chat_template(tokenizer)
    ids = prompt_ids(tokenizer, request, chat=chat, bos=bos_prefix(tokenizer))
    text = prompt_text(tokenizer, request, chat)
    return PromptTokens(text, tuple(ids), tuple(token_texts(tokenizer, ids)), chat=request.chat and chat)


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """Each filled layer's (keys, values) [B, heads, T, d] of a transformers key/value cache: ``cache.layers`` in
    transformers ≥ 4.56, ``key_cache``/``value_cache`` before."""
    if hasattr(cache, "layers"):
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in cache.layers]
    else:  # older transformers
        pairs = list(zip(getattr(cache, "key_cache", []), getattr(cache, "value_cache", []), strict=True))
    return [(k, v) for k, v in pairs if k is not None and v is not None]


def cache_argument(model: Any) -> str:
    """The name of the forward pass's key/value cache argument: ``cache`` in transformers ≥ 5.x (which warns on the
    old name), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
