"""The Linear layers a weight method touches: every ``nn.Linear`` but the output head, unless asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import torch


def linear_layers(model: torch.nn.Module, *, include_lm_head: bool = False) -> Iterator[tuple[str, Any]]:
    """(name, module) of each Linear layer. With ``include_lm_head`` and tied embeddings, the head gets its own
    copy first, so compressing it never changes the input embedding table."""
    import torch

    net: Any = model
    output = net.get_output_embeddings() if hasattr(net, "get_output_embeddings") else None
    if include_lm_head and output is not None and hasattr(net, "get_input_embeddings"):
        inp = net.get_input_embeddings()
        if inp is not None and output.weight.data_ptr() == inp.weight.data_ptr():
            output.weight = torch.nn.Parameter(output.weight.detach().clone())
    found = False
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (include_lm_head or module is not output):
            found = True
            yield name, module
    if not found:
        raise FlipscopeError("found no Linear layers to compress in this model")


def decoder_layers(model: torch.nn.Module) -> Any:
    """The ModuleList of transformer blocks (``model.model.layers`` for Llama-like models)."""
    net: Any = model
    decoder = net.get_decoder() if hasattr(net, "get_decoder") else getattr(net, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise FlipscopeError(
            f"cannot find the decoder layers of {type(model).__name__}",
            fix="layer dropping supports models whose decoder keeps its blocks in `.layers`",
        )
    return layers
