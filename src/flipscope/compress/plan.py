"""Mixed-precision round-to-nearest: a plan file giving each Linear layer its own bit width and group size
(``+plan:PLAN.json``), as `flipscope advise` writes it or as a hand-made recipe (llama.cpp's Q4_K_M style).

The file: ``{"format": "flipscope-plan", "version": 1, "method": "rtn", "default": {"bits": 4, "group_size": 64},
"layers": {"model.layers.0.mlp.down_proj": {"bits": 6, "group_size": 64}, ...}, ...}``; other keys (the predicted KL,
how it was made) are kept but not read. The config carries the file's content, so a cache key changes with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import linear_layers
from flipscope.compress.rtn import RTNConfig, quantize_dequantize
from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_atomically

if TYPE_CHECKING:
    import torch

PLAN_FORMAT = "flipscope-plan"
PLAN_VERSION = 1
_FIX = (
    'write it as {"format": "flipscope-plan", "version": 1, "default": {"bits": 4, "group_size": 64}, "layers": {...}}'
)


def bits_per_weight(bits: int, group_size: int | None, in_features: int) -> float:
    """Storage per weight of symmetric RTN: the code plus one float16 scale per group (per row without groups)."""
    return bits + 16 / (group_size or in_features)


def average_bits(modules: Mapping[str, Any], widths: Mapping[str, RTNConfig]) -> float:
    """Bits per weight over the Linear layers ``widths`` names (``modules``: name → nn.Linear), each layer weighted
    by its number of weights."""
    total = sum(modules[n].weight.numel() for n in widths)
    stored = sum(modules[n].weight.numel() * bits_per_weight(w.bits, w.group_size, modules[n].in_features)
                 for n, w in widths.items())  # fmt: skip
    return stored / total if total else 0.0


def _width(value: Any, where: str) -> RTNConfig:
    if not isinstance(value, dict) or not isinstance(value.get("bits"), int):
        raise FlipscopeError(f"{where}: expected {{'bits': <2-8>, 'group_size': <int or null>}}", fix=_FIX)
    group = value.get("group_size")
    if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
        raise FlipscopeError(f"{where}: group_size must be an integer or null", fix=_FIX)
    return RTNConfig(bits=int(value["bits"]), group_size=group)


def read_document(path: Path, method: str) -> dict[str, Any]:
    """A plan file's whole document, checked for the format, the version and ``method`` ("rtn": per-Linear widths;
    "ggml": llama.cpp types per GGUF tensor); a clear error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FlipscopeError(
            f"cannot read plan {path}: {exc}", fix="give a plan file written by flipscope advise"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise FlipscopeError(f'{path} is not a flipscope plan (no "format": "{PLAN_FORMAT}")', fix=_FIX)
    if data.get("version") != PLAN_VERSION:
        raise FlipscopeError(f"{path}: plan version {data.get('version')!r}; this flipscope reads {PLAN_VERSION}")
    found = data.get("method", "rtn")
    if found != method:
        use = "+plan:FILE on an hf:/bundled: model" if found == "rtn" else "+ggml:plan=FILE on a gguf: model"
        raise FlipscopeError(f"{path} is a {found} plan, not a {method} one", fix=f"use it as {use}")
    return data


def read_plan(path: Path) -> tuple[RTNConfig, dict[str, RTNConfig], dict[str, Any]]:
    """(default width, per-layer widths, the whole document) of a plan file; a clear error naming the file."""
    data = read_document(path, "rtn")
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise FlipscopeError(f'{path}: "layers" must map layer names to widths', fix=_FIX)
    default = _width(data.get("default"), f"{path}: default")
    return default, {str(k): _width(v, f"{path}: layer {k}") for k, v in layers.items()}, data


def write_document(path: Path, method: str, body: dict[str, Any], **extra: Any) -> Path:
    """Write a plan file atomically: the format, the version, ``method``, ``body`` and ``extra`` (what made it …)."""
    doc = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "method": method, **body, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8"))


def write_plan(path: Path, default: RTNConfig, layers: dict[str, RTNConfig], **extra: Any) -> Path:
    """Write a plan file (``extra``: what made it, its predicted KL, average bits …)."""
    body = {"default": {"bits": default.bits, "group_size": default.group_size},
            "layers": {k: {"bits": v.bits, "group_size": v.group_size} for k, v in sorted(layers.items())}}  # fmt: skip
    return write_document(path, "rtn", body, **extra)


@register
@dataclass(frozen=True)
class PlanConfig(CompressionConfig):
    """Per-layer round-to-nearest widths from a plan file: plan:<file.json>."""

    method: ClassVar[str] = "plan"
    syntax: ClassVar[str] = "plan:<plan.json> (from flipscope advise, or a recipe)"
    path: str = ""  # as the user typed it (the label); the layers below are its content (the cache key)
    default: tuple[int, int | None] = (4, 64)
    layers: tuple[tuple[str, int, int | None], ...] = ()

    @classmethod
    def parse(cls, args: str) -> PlanConfig:
        from flipscope.plumbing.cache import user_path

        text = args.strip().removeprefix("plan=")
        if not text:
            raise FlipscopeError("plan: needs a file, e.g. +plan:advised.json", fix="flipscope advise … --out FILE")
        default, layers, _ = read_plan(user_path(text))
        return cls(path=text, default=(default.bits, default.group_size),
                   layers=tuple((name, w.bits, w.group_size) for name, w in sorted(layers.items())))  # fmt: skip

    def label(self) -> str:
        return f"plan:{self.path}"  # as typed: two plans of one name in different folders stay apart

    def check_model(self, model_config: dict[str, Any]) -> None:
        pass  # groups are checked per layer against the layer's own width when applied

    def widths(self) -> tuple[RTNConfig, dict[str, RTNConfig]]:
        default = RTNConfig(bits=self.default[0], group_size=self.default[1])
        return default, {name: RTNConfig(bits=b, group_size=g) for name, b, g in self.layers}


def check_layers(named: dict[str, RTNConfig], model_layers: dict[str, int], source: str) -> None:
    """Every layer a plan names must be a Linear of the model, and each group must divide its input width."""
    unknown = sorted(set(named) - set(model_layers))
    if unknown:
        raise FlipscopeError(
            f"{source} names {len(unknown)} layer(s) this model does not have (e.g. {unknown[0]!r}; it has "
            f"{len(model_layers)} Linear layers such as {next(iter(model_layers), '–')!r})",
            fix="advise the plan for this model, or fix the layer names",
        )
    for name, width in named.items():
        if width.group_size and model_layers[name] % width.group_size:
            raise FlipscopeError(
                f"{source}: group size {width.group_size} does not divide {name}'s input width {model_layers[name]}",
                fix="use a group size that divides it",
            )


@apply_compression.register(PlanConfig)
def _apply_plan(
    config: PlanConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    default, named = config.widths()
    modules = dict(linear_layers(model))
    check_layers(named, {n: int(m.in_features) for n, m in modules.items()}, f"plan {config.path}")
    used = {}
    with torch.no_grad():
        for name, module in modules.items():
            width = named.get(name, default)
            if width.group_size and module.in_features % width.group_size:
                raise FlipscopeError(
                    f"plan {config.path}: the default group size {width.group_size} does not divide {name}'s input "
                    f"width {module.in_features}",
                    fix="name that layer with a group size that divides it",
                )
            module.weight.copy_(quantize_dequantize(module.weight, width))
            used[name] = width
    return {"library": "flipscope", "layers": len(modules), "avg_bits_per_weight": average_bits(modules, used)}
