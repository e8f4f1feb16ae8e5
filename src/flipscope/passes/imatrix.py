"""An importance matrix by llama.cpp's definition, from a transformers model run over token windows: for each
Linear of a decoder block, the sum over every activation row (token) of each input column's square, and the
number of rows (llama-imatrix collects ``blk.*`` weights alone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flipscope.compress.imatrix import Imatrix


def collect_imatrix(model: Any, windows: Sequence[Sequence[int]], names: Mapping[str, str], *, device: str = "cpu",
                    dataset: str = "") -> Imatrix:  # fmt: skip
    """``names``: module name → the GGUF tensor name its weight has; modules that are not Linear are skipped."""
    import torch

    out = Imatrix(datasets=[dataset] if dataset else [], chunk_count=len(windows),
                  chunk_size=max((len(w) for w in windows), default=0))  # fmt: skip
    sums: dict[str, Any] = {}
    hooks = []

    def hook(tensor: str) -> Any:
        def record(module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # [rows, in]
            sums[tensor] = sums.get(tensor, 0) + (x * x).sum(dim=0)
            out.counts[tensor] = out.counts.get(tensor, 0.0) + x.shape[0]

        return record

    for module_name, tensor in names.items():
        module = model.get_submodule(module_name)
        if isinstance(module, torch.nn.Linear) and tensor.startswith("blk."):
            hooks.append(module.register_forward_pre_hook(hook(tensor)))
    try:
        with torch.no_grad():
            for ids in windows:
                model(torch.tensor([list(ids)], device=device))
    finally:
        for h in hooks:
            h.remove()
    out.sums = {name: value.cpu().numpy() for name, value in sums.items()}
    return out
