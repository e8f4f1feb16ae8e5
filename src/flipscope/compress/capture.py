"""Feeding calibration text through a model block by block, handing each chosen layer's inputs to a reducer.

The hidden states entering block 0 are caught once (with the keyword arguments the model passes its blocks:
position embeddings, masks); after a block is calibrated and compressed, ``advance`` runs it once to make the next
block's inputs, so calibrating all blocks costs one pass through the model. Rows go through in slices so that
activation memory stays bounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Reducer: (layer name, that layer's input as [tokens, in_features] float32) → None.
Reducer = Callable[[str, "torch.Tensor"], None]


class _Stop(Exception):
    """Raised by a hook once the block of interest has run; nothing after it is needed."""


def feed_inputs(
    model: torch.nn.Module,
    batch: torch.Tensor,
    layers: Mapping[str, torch.nn.Module],
    reduce: Reducer,
    *,
    rows_per_pass: int = 8,
) -> None:
    """Run ``batch`` ([samples, length] token ids) through the whole ``model``, calling ``reduce`` on each layer's
    input."""
    import torch

    handles = [layer.register_forward_pre_hook(_hook(name, reduce)) for name, layer in layers.items()]
    try:
        with torch.no_grad():
            for start in range(0, batch.shape[0], rows_per_pass):
                model(input_ids=batch[start : start + rows_per_pass], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


class BlockInputs:
    """The calibration batch's hidden states at the entry of the current block."""

    def __init__(self, model: torch.nn.Module, batch: torch.Tensor, blocks: Any, *, rows_per_pass: int = 8) -> None:
        import torch

        self.slices: list[tuple[torch.Tensor, dict[str, Any]]] = []

        def catch(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs.pop("hidden_states")
            self.slices.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
            raise _Stop

        handle = blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            with torch.no_grad():
                for start in range(0, batch.shape[0], rows_per_pass):
                    with contextlib.suppress(_Stop):
                        model(input_ids=batch[start : start + rows_per_pass], use_cache=False)
        finally:
            handle.remove()

    def feed(self, block: torch.nn.Module, layers: Mapping[str, torch.nn.Module], reduce: Reducer) -> None:
        """Run ``block`` on the current inputs, handing each of ``layers``' inputs to ``reduce``."""
        self._run(block, layers, reduce, keep=False)

    def advance(self, block: torch.nn.Module) -> None:
        """Replace the inputs by ``block``'s outputs: the inputs of the block after it."""
        self._run(block, {}, None, keep=True)

    def _run(
        self, block: torch.nn.Module, layers: Mapping[str, torch.nn.Module], reduce: Reducer | None, *, keep: bool
    ) -> None:
        import torch

        handles = [layer.register_forward_pre_hook(_hook(name, reduce)) for name, layer in layers.items() if reduce]
        try:
            with torch.no_grad():
                for index, (hidden, kwargs) in enumerate(self.slices):
                    out = block(hidden, **kwargs)
                    if keep:
                        self.slices[index] = (out[0] if isinstance(out, tuple) else out, kwargs)
        finally:
            for handle in handles:
                handle.remove()


def _hook(name: str, reduce: Reducer) -> Callable[..., None]:
    def record(module: Any, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        reduce(name, x.reshape(-1, x.shape[-1]).float())  # [tokens, in]

    return record


def block_linears(block: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers inside one transformer block, by their name within it."""
    import torch

    return {name: m for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
