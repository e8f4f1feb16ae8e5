"""Model specs: ``SOURCE:LOCATION[+METHOD:ARGS]...`` — one parser for baseline and candidates alike.

``bundled:smollm2-135m``, ``hf:/path/to/folder``, ``hf:org/name``, ``bundled:smollm2-135m+rtn:w4g64``.
A candidate may start with ``+`` to mean "the baseline, compressed": ``+rtn:w8``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flipscope.compress import CompressionConfig, parse_method
from flipscope.errors import FlipscopeError
from flipscope.plumbing.cache import user_path

SPEC_HELP = "write hf:<folder or hub id>, bundled:<name> (see `flipscope models`), optionally +<method>:<args>"


@dataclass(frozen=True)
class ModelSpec:
    source: str
    location: str
    compression: tuple[CompressionConfig, ...] = ()

    def label(self) -> str:
        return f"{self.source}:{self.location}" + "".join(f"+{c.label()}" for c in self.compression)

    def base(self) -> ModelSpec:
        return replace(self, compression=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "compression": [c.to_dict() for c in self.compression],
        }

    def __str__(self) -> str:
        return self.label()


def parse_spec(text: str, *, baseline: ModelSpec | None = None) -> ModelSpec:
    from flipscope.models.registry import SOURCES

    text = text.strip()
    if not text:
        raise FlipscopeError("empty model spec", fix=SPEC_HELP)
    head, *methods = text.split("+")
    if not head:
        if baseline is None:
            raise FlipscopeError(
                f"spec {text!r} starts with '+' but there is no baseline to apply it to", fix=SPEC_HELP
            )
        spec = baseline
    else:
        source, sep, location = head.partition(":")
        if sep and source.lower() in SOURCES:
            spec = ModelSpec(source.lower(), location.strip())
        elif user_path(head).is_dir():
            spec = ModelSpec("hf", head)
        else:
            known = ", ".join(sorted(SOURCES))
            raise FlipscopeError(f"unknown model spec {text!r} (sources: {known})", fix=SPEC_HELP)
        if not spec.location:
            raise FlipscopeError(f"model spec {text!r} names no model after '{source}:'", fix=SPEC_HELP)
    extra = tuple(parse_method(m) for m in methods)
    chain = spec.compression + extra
    late = [c.label() for c in chain[1:] if c.at_load]
    if late:
        raise FlipscopeError(
            f"{late[0]} in {text!r} quantizes while the weights load, so it must come first",
            fix="write it right after the model, e.g. hf:DIR+bnb:nf4+drop:last1",
        )
    return replace(spec, compression=chain)
