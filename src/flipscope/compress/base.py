"""Compression methods: one typed config per method, parsed from a spec suffix, applied by type."""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CompressionConfig:
    """Base of every method's config. ``method`` is the name used in specs (``+rtn:w4g64``)."""

    method: ClassVar[str] = ""
    #: How the spec suffix is written, for `flipscope methods` and error messages.
    syntax: ClassVar[str] = ""
    #: Bumped when a method's parameters change meaning; stored with every serialized config.
    version: ClassVar[int] = 1
    #: Applied by the loader while the weights are read (bitsandbytes), not to a loaded model: must come first.
    at_load: ClassVar[bool] = False
    #: False where the result is not plain dense weights that `flipscope compress` could save and reload.
    saveable: ClassVar[bool] = True

    def load_kwargs(self, device: str) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained``; only for ``at_load`` methods."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """What an ``at_load`` method records in the run (library and version)."""
        return {}

    def check_model(self, model_config: dict[str, Any]) -> None:
        """Refuse settings this model cannot take (a group size that does not divide a layer's input width), from
        its config.json alone, before any weights are loaded."""
        group = getattr(self, "group_size", None)
        if not group:
            return
        widths = linear_input_widths(model_config)
        bad = sorted(w for w in widths if w % group)
        if bad:
            fits = [g for g in (32, 64, 128, 256) if all(w % g == 0 for w in widths)]
            raise FlipscopeError(
                f"{self.label()}: group size {group} does not divide the Linear input width {bad[0]} of this model "
                f"(widths {', '.join(map(str, sorted(widths)))})",
                fix=f"use a group size that divides every width, e.g. {fits[-1] if fits else 'a divisor'}",
            )

    @classmethod
    def parse(cls, args: str) -> CompressionConfig:  # pragma: no cover - overridden
        raise NotImplementedError

    def label(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, **asdict(self)}

    @classmethod
    def parameters(cls) -> list[tuple[str, object]]:
        """(name, default) of each parameter."""
        return [(f.name, f.default) for f in fields(cls)]


METHODS: dict[str, type[CompressionConfig]] = {}


def linear_input_widths(model_config: dict[str, Any]) -> set[int]:
    """The input widths of a decoder's Linear layers, read from a transformers config.json (text part)."""
    text = model_config.get("text_config") or model_config
    widths = set()
    hidden = text.get("hidden_size")
    if hidden:
        widths.add(int(hidden))
        heads = text.get("num_attention_heads")
        head_dim = text.get("head_dim") or (hidden // heads if heads else None)
        if heads and head_dim:
            widths.add(int(heads) * int(head_dim))  # o_proj
    for key in ("intermediate_size", "ffn_hidden_size"):
        if text.get(key):
            widths.add(int(text[key]))
    return widths


def require(module: str, *, method: str, pip: str) -> Any:
    """Import ``module`` for ``method``, or fail with the exact install line."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FlipscopeError(
            f"method {method} needs the {module} library, which is not installed", fix=f"pip install {pip}"
        ) from exc


def register(cls: type[CompressionConfig]) -> type[CompressionConfig]:
    METHODS[cls.method] = cls
    return cls


def config_from_dict(data: dict[str, Any]) -> CompressionConfig:
    """The inverse of ``CompressionConfig.to_dict``; refuses a version this flipscope does not know."""
    values = dict(data)
    name, version = values.pop("method", None), values.pop("version", 1)
    cls = METHODS.get(str(name))
    if cls is None:
        raise FlipscopeError(f"unknown compression method {name!r} in a stored config")
    if version != cls.version:
        raise FlipscopeError(
            f"stored {name} config has version {version}; this flipscope reads version {cls.version}",
            fix="recreate it with this flipscope version",
        )
    for key, value in values.items():
        values[key] = _tuples(value)
    return cls(**values)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a frozen config holds, at any depth."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


#: ``N:M`` (e.g. ``2:4``) is shorthand for the N:M structured-sparsity method.
_NM_SHORTHAND = re.compile(r"^\d+:\d+$")


def parse_method(text: str) -> CompressionConfig:
    """``"rtn:w4g64"`` → ``RTNConfig(bits=4, group_size=128)``."""
    if _NM_SHORTHAND.match(text.strip()):
        text = "nm:" + text.strip()
    name, _, args = text.partition(":")
    if name.strip().lower() == "rtn" and args.strip().startswith("plan="):  # +rtn:plan=FILE, the plan method
        name = "plan"
    cls = METHODS.get(name.strip().lower())
    if cls is None:
        known = ", ".join(sorted(METHODS)) or "none"
        raise FlipscopeError(
            f"unknown compression method {name!r} in {text!r}",
            fix=f"use one of: {known} (see `flipscope models`)",
        )
    return cls.parse(args.strip())


@dataclass(frozen=True)
class CompressionContext:
    """What some methods need beyond the weights: the tokenizer (for calibration text) and the device."""

    tokenizer: Any = None
    device: str = "cpu"


@functools.singledispatch
def apply_compression(
    config: CompressionConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    """Compress ``model`` in place; returns statistics (layers touched, error). Dispatched by config type."""
    raise FlipscopeError(f"compression method {config.method!r} has no implementation for this backend")
