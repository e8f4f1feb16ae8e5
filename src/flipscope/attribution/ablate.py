"""Ablations in memory: a loaded model whose Linear layers each hold one of several weight versions (the baseline's,
the candidate's, a bit width's), swapped by copying into the same parameter — no reload per unit — and measured
against the cached baseline store (corpus KL) or the baseline's own scores on a task (flips)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipscope.compress import CompressionContext, apply_compression
from flipscope.compress.layers import linear_layers
from flipscope.errors import FlipscopeError
from flipscope.models import ModelSpec


class WeightBank:
    """The model's Linear weights: the baseline's kept on the side, other versions made on demand; ``use`` sets
    every named Linear to a version ("baseline" for any not named)."""

    def __init__(self, model: Any, modules: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.modules = dict(linear_layers(model)) if modules is None else dict(modules)  # name → module with .weight
        self.baseline = {n: m.weight.detach().clone() for n, m in self.modules.items()}
        self.versions: dict[str, dict[str, Any]] = {}
        self.assignment: dict[str, str] = {}  # what ``use`` set last: Linear name → version (baseline: left out)

    def capture(self, name: str, apply: Callable[[], None]) -> list[str]:
        """Run ``apply`` (which rewrites weights in place), keep the Linear weights it changed as version ``name``,
        restore the baseline; returns the changed layers. Refuses methods that replace the Linear modules."""
        import torch

        held = {id(m.weight) for m in self.modules.values()}
        others = {n: p for n, p in self.model.named_parameters() if id(p) not in held}
        before = {n: _fingerprint(p) for n, p in others.items()}
        apply()
        moved = [n for n, p in others.items() if _fingerprint(p) != before[n]]
        if moved:
            self.use({})
            raise FlipscopeError(
                f"this compression also changes weights outside the Linear layers ({', '.join(moved[:3])}"
                f"{', …' if len(moved) > 3 else ''}): swapping the Linear weights alone would not give its model",
                fix="attribute a method that rewrites only Linear weights (rtn, hqq, gptq, ggml, wanda, …)",
            )
        after = dict(linear_layers(self.model))
        if set(after) != set(self.modules) or any(after[n] is not self.modules[n] for n in after):
            raise FlipscopeError(
                "this compression replaces the model's Linear layers: attribution swaps weights inside them",
                fix="attribute a method that rewrites Linear weights in place (rtn, hqq, gptq, ggml, wanda, …)",
            )
        changed = [n for n, m in self.modules.items() if not torch.equal(m.weight, self.baseline[n])]
        self.versions[name] = {n: self.modules[n].weight.detach().clone() for n in changed}
        self.use({})
        return changed

    def add(self, name: str, weights: Mapping[str, Any]) -> None:
        """Keep ``weights`` (module name → a tensor of that module's weight shape) as version ``name``."""
        for module, weight in weights.items():
            if tuple(weight.shape) != tuple(self.modules[module].weight.shape):
                raise FlipscopeError(f"version {name}: {module} has shape {tuple(weight.shape)}, the model's "
                                     f"{tuple(self.modules[module].weight.shape)}")  # fmt: skip
        self.versions[name] = {m: w.to(self.baseline[m].dtype) for m, w in weights.items()}

    def use(self, assignment: Mapping[str, str]) -> None:
        """Linear name → version name ("baseline" or one captured); every other Linear gets its baseline weights."""
        import torch

        with torch.no_grad():
            for name, module in self.modules.items():
                version = assignment.get(name, "baseline")
                source = self.baseline[name] if version == "baseline" else self.versions[version].get(name)
                module.weight.copy_(self.baseline[name] if source is None else source)
        kept = {n: v for n, v in assignment.items() if n in self.modules and v != "baseline"}
        self.assignment = {n: v for n, v in kept.items() if self.versions[v].get(n) is not None}

    def changed(self) -> list[Any]:
        """The Linear modules that do not hold their baseline weights now."""
        return [self.modules[n] for n in self.assignment]


def _fingerprint(p: Any) -> tuple[float, float]:
    """Two sums of a parameter (float64): any change a compression makes to a weight moves them."""
    total = square = 0.0
    for part in p.detach().reshape(-1).split(1 << 22):  # 4M values at a time: no float64 copy of a whole embedding
        values = part.double()
        total, square = total + float(values.sum()), square + float((values * values).sum())
    return total, square


def capture_compression(bank: WeightBank, spec: ModelSpec, backend: Any, name: str = "candidate") -> list[str]:
    """Apply ``spec``'s compression to the loaded baseline, keep its weights as version ``name``."""
    if not spec.compression:
        raise FlipscopeError(f"{spec.label()} applies no compression to attribute", fix="e.g. BASELINE+rtn:w3g64")
    if any(c.at_load for c in spec.compression):
        raise FlipscopeError(f"{spec.label()}: a load-time method cannot be swapped layer by layer")

    def apply() -> None:
        for config in spec.compression:
            apply_compression(config, backend.model, CompressionContext(backend.tokenizer, backend.device))

    changed = bank.capture(name, apply)
    if not changed:
        raise FlipscopeError(f"{spec.label()} changes no Linear weight: nothing to attribute")
    return changed


@dataclass(frozen=True)
class WindowKL:
    """Mean per-position KL(baseline‖model) of each window measured (NaN or infinite where a window holds a NaN or
    infinite value: such a window is never dropped — it makes the whole measurement non-finite)."""

    windows: tuple[int, ...]
    kl: tuple[float, ...]

    @property
    def bad(self) -> list[int]:
        """The windows whose KL is NaN or infinite."""
        return [w for w, v in zip(self.windows, self.kl, strict=True) if not np.isfinite(v)]

    @property
    def mean(self) -> float:
        """The mean over every window's positions (windows hold equal numbers); non-finite if any window is."""
        return float(np.mean(np.asarray(self.kl, dtype=np.float64)))


class _Shifted:
    """A baseline store read from ``offset`` positions on: a plan starting at a later window reads its own rows."""

    def __init__(self, stored: Any, offset: int) -> None:
        self.stored, self.offset = stored, offset

    def read(self, start: int, end: int) -> Any:
        return self.stored.read(start + self.offset, end + self.offset)


@dataclass(frozen=True)
class CorpusMeter:
    """KL(baseline‖model) of the model as it is now on the plan's windows, against the stored baseline (whose rows
    for those windows start ``offset`` positions in)."""

    backend: Any
    stored: Any
    plan: Any
    batch: int = 1
    rows: int = 256
    offset: int = 0
    bank: WeightBank | None = None  # with ``inputs``: measure from the first block the bank changed (``resume``)
    inputs: Any = None  # attribution.resume.BlockInputs of the backend's model, captured on this meter's windows

    def __call__(self) -> WindowKL:
        first = self.inputs.first_block(self.bank.changed()) if self.bank and self.inputs is not None else None
        if not first:  # None: a change outside the blocks (or none); 0: the first block — the full forward
            return self._measure()
        assert self.bank is not None
        if not self.inputs.inputs:  # captured once, on the baseline's weights, and checked
            kept = dict(self.bank.assignment)
            self.bank.use({})
            try:
                ready = self.inputs.prepare(self._measure, _same_windows)
            finally:
                self.bank.use(kept)
            if not ready:
                return self._measure()
        with self.inputs.resumed(first):
            return self._measure()

    def _measure(self) -> WindowKL:
        from flipscope.metrics.corpus_stats import finite_windows
        from flipscope.metrics.windows import window_means
        from flipscope.passes.kld import score_candidate
        from flipscope.store.kld_parts import PositionParts
        from flipscope.store.kld_run import POSITION_COLUMNS

        stored: Any = _Shifted(self.stored, self.offset) if self.offset else self.stored
        cols = score_candidate(self.backend, None, stored, self.plan, self.batch, self.rows, lambda n: None,
                               PositionParts(None))  # fmt: skip
        _, bad = finite_windows(cols, POSITION_COLUMNS)
        ids, means = window_means(cols["window"], np.where(np.isin(cols["window"], bad), 0.0, cols["kl"]))
        kl = tuple(float("nan") if w in bad else float(v) for w, v in zip(ids, means, strict=True))
        return WindowKL(tuple(int(w) for w in ids), kl)


def _same_windows(a: WindowKL, b: WindowKL) -> bool:
    """The same windows and KLs equal to float rounding: a resumed measurement recomputes the same operations."""
    return a.windows == b.windows and bool(np.allclose(a.kl, b.kl, rtol=1e-5, atol=1e-9, equal_nan=True))


def correctness(backend: Any, requests: Iterable[Any], spans: list[tuple[int, int]], targets: list[int]) -> list[bool]:
    """Per item: does the model as it is now pick the right option (summed log-likelihood, first of ties)?"""
    from flipscope.metrics import first_argmax

    scored = backend.score(list(requests))
    out = []
    for (start, end), target in zip(spans, targets, strict=True):
        values = tuple(v for s in scored[start:end] for v in s.logprobs)
        out.append(first_argmax(values) == target)
    return out
