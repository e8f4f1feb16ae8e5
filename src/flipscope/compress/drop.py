"""Layer dropping: remove whole transformer blocks (the last n, or listed indices)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from flipscope.compress.base import CompressionConfig, CompressionContext, apply_compression, register
from flipscope.compress.layers import decoder_layers
from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch

_HELP = "write drop:last<n> or drop:layers=<i>,<j>,... (0-based block indices)"


@register
@dataclass(frozen=True)
class DropLayersConfig(CompressionConfig):
    """Remove transformer blocks: drop:last2 (the last two) or drop:layers=3,7 (0-based)."""

    method: ClassVar[str] = "drop"
    syntax: ClassVar[str] = "drop:last<n> | drop:layers=<i>,<j>,..."
    last: int = 0
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.last < 0 or any(i < 0 for i in self.layers) or bool(self.last) == bool(self.layers):
            raise FlipscopeError(f"invalid layer drop {self.label()!r}", fix=_HELP)

    @classmethod
    def parse(cls, args: str) -> DropLayersConfig:
        text = args.strip()
        last = re.match(r"^last(\d+)$", text)
        listed = re.match(r"^layers=(\d+(?:,\d+)*)$", text)
        if last:
            return cls(last=int(last.group(1)))
        if listed:
            return cls(layers=tuple(sorted({int(i) for i in listed.group(1).split(",")})))
        raise FlipscopeError(f"cannot read drop arguments {args!r}", fix=_HELP)

    def label(self) -> str:
        return f"drop:last{self.last}" if self.last else "drop:layers=" + ",".join(map(str, self.layers))

    def indices(self, n_layers: int) -> list[int]:
        chosen = list(range(n_layers - self.last, n_layers)) if self.last else list(self.layers)
        if any(i >= n_layers for i in chosen) or len(set(chosen)) >= n_layers:
            raise FlipscopeError(
                f"{self.label()} does not fit a model of {n_layers} blocks",
                fix=f"drop fewer than {n_layers} blocks, with indices below {n_layers}",
            )
        return chosen


@apply_compression.register(DropLayersConfig)
def _apply_drop(
    config: DropLayersConfig, model: torch.nn.Module, context: CompressionContext | None = None
) -> dict[str, Any]:
    import torch

    net: Any = model
    blocks = decoder_layers(model)
    dropped = set(config.indices(len(blocks)))
    kept = [block for i, block in enumerate(blocks) if i not in dropped]
    for new_index, block in enumerate(kept):
        # attention modules address the KV cache by their layer index: renumber them
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    parent = net.get_decoder() if hasattr(net, "get_decoder") else net.model
    parent.layers = torch.nn.ModuleList(kept)
    config_obj = net.config
    config_obj.num_hidden_layers = len(kept)
    layer_types = getattr(config_obj, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(blocks):
        config_obj.layer_types = [t for i, t in enumerate(layer_types) if i not in dropped]
    return {"library": "flipscope", "dropped": sorted(dropped), "layers_left": len(kept)}
