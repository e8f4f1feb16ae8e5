"""The noise floor: the baseline run again under other engine settings (another batch size, optionally another
dtype), paired with itself. Whatever it flips is noise — the same weights, only the arithmetic changed — and a
candidate whose flips are no higher than the floor's 95% interval cannot be told apart from it."""

from __future__ import annotations

from dataclasses import dataclass

from flipscope.errors import FlipscopeError
from flipscope.metrics import TaskSummary
from flipscope.metrics.noise_floor import floor_label
from flipscope.models import ModelSpec
from flipscope.models.registry import same_weights


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


def role_of(label: str, baseline: str) -> str:
    """A records.parquet label's role: the baseline, the noise floor ("<baseline> [noise floor]") or a candidate."""
    return "baseline" if label == baseline else "noise floor" if label == floor_label(baseline) else "candidate"


def engines_note(base: ModelSpec, cand: ModelSpec, per_task: dict[str, TaskSummary]) -> str | None:
    """Where the candidate runs the baseline's very weights on another engine, what it measures is the engines'
    noise floor: say so, with the numbers."""
    weights = same_weights(base)
    if weights is None or weights != same_weights(cand) or base.source == cand.source:
        return None
    s = per_task.get("all") or next(iter(per_task.values()))
    flips = "n/a" if s.flips is None else f"{s.flips:.1%}"
    choice = "n/a" if s.choice_kl_mean is None else f"{s.choice_kl_mean:.1e}"
    token = "n/a" if s.token_kl_mean is None else f"{s.token_kl_mean:.1e}"
    return (
        f"{cand.label()} runs the baseline's weights ({weights}) on another engine ({base.source} → {cand.source}): "
        f"its flips {flips}, choice KL {choice} and token KL {token} are the two backends' noise floor; "
        "compression effects below it cannot be told apart across these engines"
    )
