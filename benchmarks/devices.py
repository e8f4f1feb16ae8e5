"""What the benchmark scripts share about devices (imported by them from this folder)."""

from __future__ import annotations


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): a timer read after it counts all of it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
