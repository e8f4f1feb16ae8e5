"""Model sources by name (``hf``, ``bundled``, ``gguf``, …): what each one is told to do, and the table that
``registry`` fills and spec parsing reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flipscope.models.base import Backend, GenRequest, PromptTokens
from flipscope.models.options import LoadOptions
from flipscope.models.spec import ModelSpec


@dataclass(frozen=True)
class Source:
    name: str
    help: str
    #: Identity of the uncompressed weights, computed without loading the model.
    fingerprint: Callable[[str], dict[str, Any]]
    load: Callable[[ModelSpec, LoadOptions], Backend]
    #: The model's config.json as a dict, read without loading weights; None where it cannot be read cheaply.
    config: Callable[[str], dict[str, Any] | None] | None = None
    #: What the model is given for a request (``flipscope prompt``), from its tokenizer alone where the engine
    #: allows; None where the engine's tokenisation cannot be asked (a server).
    prompt: Callable[[str, GenRequest], PromptTokens] | None = None


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    SOURCES[source.name] = source
