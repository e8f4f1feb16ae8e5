"""The noise floor: the baseline run again under other engine settings (another batch size, optionally another
dtype), paired with itself. Whatever it flips is noise — the same weights, only the arithmetic changed — and a
candidate whose flips are no higher than the floor's 95% interval cannot be told apart from it."""

from __future__ import annotations

from dataclasses import dataclass

from flipscope.errors import FlipscopeError
from flipscope.metrics import TaskSummary


@dataclass(frozen=True)
class NoiseFloor:
    batch_size: int
    dtype: str | None = None  # None: the baseline's dtype

    @staticmethod
    def default(batch_size: int) -> NoiseFloor:
        """Batch 1 against a batched baseline (padding and batched kernels are the usual source), else batch 8."""
        return NoiseFloor(1 if batch_size != 1 else 8)

    def setup(self, batch_size: int, dtype: str) -> str:
        """How the floor differs from the baseline, in words."""
        parts = [f"batch {batch_size} → {self.batch_size}"] if self.batch_size != batch_size else []
        if self.dtype and self.dtype != dtype:
            parts.append(f"{dtype} → {self.dtype}")
        return ", ".join(parts)

    def check(self, batch_size: int, dtype: str) -> None:
        if self.batch_size < 1:
            raise FlipscopeError(f"--noise-floor-batch must be at least 1, got {self.batch_size}")
        if not self.setup(batch_size, dtype):
            raise FlipscopeError(
                f"the noise floor would run exactly as the baseline (batch {batch_size}, {dtype})",
                fix="give it another --noise-floor-batch or --noise-floor-dtype",
            )


def indistinguishable(candidate: TaskSummary, floor: TaskSummary) -> bool | None:
    """Whether the candidate's flips are within the floor's 95% interval (None where either is unknown)."""
    if candidate.flips is None or floor.flips_ci is None:
        return None
    return candidate.flips <= floor.flips_ci[1]
