"""Per-tensor llama.cpp types: a plan file mapping GGUF tensor names to types (``flipscope advise gguf:…`` writes
it), checked against a GGUF file's tensors, and turned into llama.cpp's tensor-type overrides (exact-name regular
expressions, so no pattern can catch another tensor: llama.cpp takes the first pattern that matches).

The file: ``{"format": "flipscope-plan", "version": 1, "method": "ggml", "tensors": {"blk.0.attn_q.weight": "Q4_K",
...}, "imatrix": {"file": ..., "sha256": ...} | null, ...}``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flipscope.compress.gguf_types import TensorInfo, check_type, fits, made_as
from flipscope.compress.plan import read_document, write_document
from flipscope.errors import FlipscopeError


def read_ggml_plan(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(GGUF tensor name → type, the whole document) of a ggml plan file."""
    doc = read_document(path, "ggml")
    tensors = doc.get("tensors")
    if not isinstance(tensors, dict) or not tensors or not all(isinstance(v, str) for v in tensors.values()):
        raise FlipscopeError(f'{path}: "tensors" must map GGUF tensor names to llama.cpp types (e.g. "Q4_K")',
                             fix="write it with flipscope advise gguf:BASE.gguf … --out FILE")  # fmt: skip
    return {str(k): check_type(v, f"{path}: tensor {k}") for k, v in tensors.items()}, doc


def write_ggml_plan(path: Path, tensors: dict[str, str], **extra: Any) -> Path:
    return write_document(path, "ggml", {"tensors": dict(sorted(tensors.items()))}, **extra)


def check_plan(plan: dict[str, str], tensors: Sequence[TensorInfo], source: str) -> None:
    """Refuse a plan naming tensors the file lacks or llama.cpp leaves as they are, or a type a tensor's rows cannot
    be stored in (llama.cpp would silently store another)."""
    known = {t.name: t for t in tensors}
    unknown = sorted(set(plan) - set(known))
    if unknown:
        raise FlipscopeError(f"{source} names {len(unknown)} tensor(s) the file does not have (e.g. {unknown[0]!r})",
                             fix="advise the plan for this file, or fix the tensor names")  # fmt: skip
    for name, qtype in sorted(plan.items()):
        tensor = known[name]
        if not tensor.quantizable:
            raise FlipscopeError(f"{source}: llama.cpp does not quantize {name} (it keeps its {tensor.qtype})",
                                 fix="leave it out of the plan")  # fmt: skip
        if not fits(qtype, tensor.row):
            raise FlipscopeError(
                f"{source}: {name} has rows of {tensor.row} weights, not whole blocks of {qtype}; llama.cpp would "
                f"store it as {made_as(qtype, tensor.row)}",
                fix="give it a type whose block divides the row (Q8_0, Q5_0, Q4_0: blocks of 32)",
            )


def overrides(plan: dict[str, str]) -> list[tuple[str, str]]:
    """llama.cpp tensor-type overrides for a plan: (anchored, escaped name pattern, type) in name order."""
    return [(f"^{re.escape(name)}$", qtype) for name, qtype in sorted(plan.items())]
