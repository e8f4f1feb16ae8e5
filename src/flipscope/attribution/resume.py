"""Ablations that recompute only from the first changed decoder block on: the baseline's input to every block, on a
meter's windows, is captured in one pass, and a measurement whose changed weights all lie in blocks ≥ b runs the
decoder from block b — the blocks before it hand their input straight on (they would recompute exactly what was
captured), block b takes the captured input. The embedding, the rotary tables and the mask are still computed (they
are cheap); everything after block b runs as usual, so the numbers are those of the full forward.

Used by ``CorpusMeter`` for transformers models whose decoder loops over ``model.get_decoder().layers`` passing the
hidden states from block to block as a plain tensor (Llama, Qwen, Mistral, Gemma … in transformers 5). Whether a model
does is checked, not assumed: every block must return a tensor while the inputs are captured, and the same windows
measured from the last block on (every block before it passed through) must give the full forward's numbers — a
decoder that hands other state from block to block (shared key/value stores, routing indices, recurrent state) fails
that check. A model that fails it, a changed weight held outside the blocks (embedding, head, a weight shared with
one) and captured inputs above ``BUDGET_BYTES`` run the full forward."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: The most memory the captured block inputs may take (they live on the model's device).
BUDGET_BYTES = 4 << 30


class _OverBudget(Exception):
    """Raised inside the capture as soon as the kept inputs pass the budget."""


class _PassThrough:
    """A block that hands its input on, standing in for one the captured input already accounts for."""

    def __init__(self, block: Any) -> None:
        import torch

        class Skip(torch.nn.Module):
            def forward(self, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
                return hidden_states

        self.module = Skip()
        for name in ("attention_type", "layer_type", "layer_idx", "sliding_window"):  # what decoder loops read
            if hasattr(block, name):
                setattr(self.module, name, getattr(block, name))


class BlockInputs:
    """The baseline's input to each decoder block, per decoder call, captured on one pass of a meter."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers = _layers(model)
        self.inputs: list[list[Any]] = []  # [call] → [block] → hidden states [B, T, H]
        self.refused: str | None = None if self.layers is not None else "the decoder has no list of blocks"
        self.block_of: dict[int, int] = {}  # id(parameter) → the first block holding it
        self.outside: set[int] = set()  # ids of parameters held by a module outside every block
        inside: set[int] = set()
        for index, block in enumerate(self.layers or []):
            for module in block.modules():
                inside.add(id(module))
                for p in module.parameters(recurse=False):
                    self.block_of.setdefault(id(p), index)
        for _, module in model.named_modules(remove_duplicate=False):
            if id(module) not in inside:
                self.outside.update(id(p) for p in module.parameters(recurse=False))

    @property
    def usable(self) -> bool:
        return self.refused is None

    def first_block(self, changed: Iterable[Any]) -> int | None:
        """The first block holding a parameter of a changed module; None where a changed parameter is also held
        outside every block, a changed module holds none, or nothing changed."""
        blocks: list[int] = []
        for module in changed:
            params = [id(p) for p in module.parameters(recurse=False)]
            if not params or any(p in self.outside or p not in self.block_of for p in params):
                return None
            blocks += [self.block_of[p] for p in params]
        return min(blocks) if blocks else None

    def prepare(self, measure: Callable[[], Any], same: Callable[[Any, Any], bool]) -> bool:
        """Capture the inputs on one call of ``measure`` (the model holding its baseline weights), then check that a
        measurement from the last block on gives the same result (``same``). False (and the full forward from then on)
        where the inputs pass the budget, a block returns anything but a tensor, or the check fails."""
        if self.refused is not None:
            return False
        if self.inputs:
            return True
        try:
            with self._capturing():
                full = measure()
            with self.resumed(len(self.inputs[0]) - 1):
                last = measure()
            if not same(full, last):
                self.refused = "the decoder's blocks depend on more than the hidden states passed between them"
        except _OverBudget:
            self.refused = f"the blocks' inputs take more than {BUDGET_BYTES / 2**30:.0f} GiB"
        except _Refused as exc:
            self.refused = str(exc)
        except Exception as exc:  # a decoder loop that a passed-through block breaks
            self.refused = f"running from a later block fails ({type(exc).__name__}: {exc})"
        if self.refused is not None:
            log.info("ablations run the full forward: %s", self.refused)
            self.inputs = []
            return False
        return True

    @contextlib.contextmanager
    def _capturing(self) -> Iterator[None]:
        """Within: every decoder call's block inputs are kept (the model must hold its baseline weights)."""
        import torch

        assert self.layers is not None
        self.inputs, size = [], 0
        hooks = []

        def keep(index: int) -> Any:
            def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                nonlocal size
                hidden = args[0] if args else kwargs["hidden_states"]
                size += hidden.numel() * hidden.element_size()
                if size > BUDGET_BYTES:
                    raise _OverBudget
                if index == 0:
                    self.inputs.append([])
                self.inputs[-1].append(hidden.detach().clone())

            return hook

        def returned(module: Any, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise _Refused(f"a decoder block returns {type(output).__name__}, not the hidden states alone")

        for index, block in enumerate(self.layers):
            hooks.append(block.register_forward_pre_hook(keep(index), with_kwargs=True))
            hooks.append(block.register_forward_hook(returned))
        try:
            yield
        except BaseException:
            self.inputs = []
            raise
        finally:
            for h in hooks:
                h.remove()

    @contextlib.contextmanager
    def resumed(self, first: int) -> Iterator[None]:
        """Within: the decoder runs from block ``first`` on its captured inputs (calls in the captured order); every
        captured call must be used, once."""
        assert self.layers is not None
        original = list(self.layers)
        calls = iter(self.inputs)
        used = 0

        def swap(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            nonlocal used
            stored = next(calls, None)
            if stored is None or tuple(stored[first].shape) != tuple(
                (args[0] if args else kwargs["hidden_states"]).shape
            ):
                raise RuntimeError("a resumed ablation's decoder calls do not line up with the captured ones")
            used += 1
            hidden = stored[first].clone()  # a block that changed its input in place would change the capture
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
        if used != len(self.inputs):
            raise RuntimeError(f"a resumed ablation used {used} of {len(self.inputs)} captured decoder calls")


class _Refused(Exception):
    """A model whose blocks cannot be resumed from captured inputs."""


def _layers(model: Any) -> Any:
    """The decoder's list of blocks (a ModuleList), or None where the model has no such list."""
    import torch

    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    layers = getattr(decoder, "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 else None
