"""Ablations that recompute only from the first changed decoder block on: the baseline's input to every block, on a
meter's windows, is captured in one pass, and a measurement whose changed weights all lie in blocks ≥ b runs the
decoder from block b — the blocks before it hand their input straight on (they would recompute exactly what was
captured), block b takes the captured input. The embedding, the rotary tables and the mask are still computed (they
are cheap); everything after block b runs as usual, so the numbers are those of the full forward.

Used by ``CorpusMeter`` for transformers models whose decoder loops over ``model.get_decoder().layers`` passing the
hidden states first (Llama, Qwen, Mistral, Gemma …); any other model, a change outside the blocks (embedding, head)
or captured inputs above ``BUDGET_BYTES`` run the full forward."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: The most memory the captured block inputs may take (they live on the model's device).
BUDGET_BYTES = 4 << 30


class _PassThrough:
    """A block that hands its input on, standing in for one the captured input already accounts for."""

    def __init__(self, block: Any) -> None:
        import torch

        class Skip(torch.nn.Module):
            def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
                return hidden_states

        self.module = Skip()
        for name in ("attention_type", "layer_idx", "sliding_window"):  # what decoder loops read off a block
            if hasattr(block, name):
                setattr(self.module, name, getattr(block, name))


class BlockInputs:
    """The baseline's input to each decoder block, per decoder call, captured on one pass of a meter."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = _layers(model)
        self.inputs: list[list[Any]] = []  # [call] → [block] → hidden states [B, T, H]
        self.block_of: dict[int, int] = {}  # id(module) → index of the block holding it
        for index, block in enumerate(self.layers or []):
            for module in block.modules():
                self.block_of[id(module)] = index

    @property
    def usable(self) -> bool:
        return self.layers is not None

    def first_block(self, changed: Iterable[Any]) -> int | None:
        """The first block holding a changed module; None where one lies outside every block (or none changed)."""
        blocks = [self.block_of.get(id(m)) for m in changed]
        if not blocks or any(b is None for b in blocks):
            return None
        return min(b for b in blocks if b is not None)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Within: every decoder call's block inputs are kept (the model must hold its baseline weights)."""
        assert self.layers is not None
        self.inputs, size = [], 0
        hooks = []

        def keep(index: int) -> Any:
            def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                nonlocal size
                hidden = args[0] if args else kwargs["hidden_states"]
                if index == 0:
                    self.inputs.append([])
                self.inputs[-1].append(hidden.detach().clone())
                size += hidden.numel() * hidden.element_size()

            return hook

        for index, block in enumerate(self.layers):
            hooks.append(block.register_forward_pre_hook(keep(index), with_kwargs=True))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
        if size > BUDGET_BYTES:
            log.info("block inputs take %.1f GiB: ablations run the full forward", size / 2**30)
            self.inputs = []

    @contextlib.contextmanager
    def resumed(self, first: int) -> Iterator[None]:
        """Within: the decoder runs from block ``first`` on its captured inputs (calls in the captured order)."""
        assert self.layers is not None
        original = list(self.layers)
        calls = iter(self.inputs)

        def swap(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            hidden = next(calls)[first]
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        for index in range(first):
            self.layers[index] = _PassThrough(original[index]).module
        hook = original[first].register_forward_pre_hook(swap, with_kwargs=True)
        try:
            yield
        finally:
            hook.remove()
            for index, block in enumerate(original):
                self.layers[index] = block


def _layers(model: Any) -> Any:
    """The decoder's list of blocks (a ModuleList), or None where the model has no such list."""
    import torch

    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    layers = getattr(decoder, "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 else None
