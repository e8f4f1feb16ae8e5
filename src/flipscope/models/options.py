"""How a model is loaded: device, dtype and batch size, given to every backend's ``load``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "float32"
    #: Questions per forward pass where a backend batches them (the transformers scorer).
    batch_size: int = 16
    #: Tokens the model must hold at once, where a backend sizes its context ahead (llama.cpp: ``n_ctx``, at least
    #: its default of 4096); None: the backend's default. ``kld --ctx`` sets it.
    context: int | None = None

    def resolved(self) -> LoadOptions:
        """The device actually used: ``auto`` → cuda where torch sees a GPU, else cpu. Cache keys hold this, so
        results computed on one device are never reused for a run on another."""
        if self.device != "auto":
            return self
        import torch

        return LoadOptions("cuda" if torch.cuda.is_available() else "cpu", self.dtype, self.batch_size, self.context)
