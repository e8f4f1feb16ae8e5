"""``flipscope.prompt_tokens``: the token ids and pieces a model is given for one prompt, from its tokenizer alone
(for debugging chat templates and BOS; lm-eval's ``--write_out`` is the analogue)."""

from __future__ import annotations

from flipscope.errors import FlipscopeError
from flipscope.models.base import GenRequest, PromptTokens
from flipscope.models.registry import parse_spec
from flipscope.models.sources import SOURCES
from flipscope.models.spec import ModelSpec


def prompt_tokens(model: str | ModelSpec, text: str, *, chat: bool = False, system: str | None = None) -> PromptTokens:
    """What ``model`` is given for ``text`` when it generates: as a chat request (``chat``: the user's message in
    the model's chat template, after ``system`` where given) or as plain text — by the same rule its backend's
    ``generate`` follows. Only the tokenizer is loaded where the engine allows it (``hf:``, ``bundled:``;
    ``gguf:`` reads the file's vocabulary only); a compressed spec shows its base model's tokenizer."""
    spec = model if isinstance(model, ModelSpec) else parse_spec(model)
    if system is not None and not chat:
        raise FlipscopeError("a system message needs a chat request", fix="add --chat (chat=True)")
    show = SOURCES[spec.source].prompt
    if show is None:
        raise FlipscopeError(
            f"{spec.source}: models tokenise on the engine or server side, which cannot be asked for the ids",
            fix="give the same model as hf:, bundled: or gguf:",
        )
    return show(spec.location, GenRequest(text, chat=chat, system=system))
