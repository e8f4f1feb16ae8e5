"""``save_compressed``: write a compressed candidate as a normal Hugging Face folder that ``hf:DIR`` loads."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec, check_compression, load_backend, parse_spec
from flipscope.plumbing.atomic import write_atomically

log = logging.getLogger(__name__)
META_FILE = "flipscope.json"


def save_compressed(spec: str | ModelSpec, out: str | Path, *, device: str = "cpu", dtype: str = "float32") -> Path:
    """Load ``spec`` (compressing it on the way), save weights, tokenizer and a ``flipscope.json`` record."""
    from flipscope.plumbing.version import library_versions

    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise FlipscopeError(f"output folder {folder} is not empty", fix="choose a new --out folder")
    unsaveable = [c.label() for c in parsed.compression if not c.saveable]
    if unsaveable:
        raise FlipscopeError(
            f"{unsaveable[0]} does not leave plain weights to save; it is re-applied in seconds, so there is "
            "nothing worth saving",
            fix="compare it directly with its spec",
        )
    check_compression(parsed)
    backend = load_backend(parsed, LoadOptions(device=device, dtype=dtype))
    try:
        net: Any = getattr(backend, "model", None)
        tokenizer = getattr(backend, "tokenizer", None)
        if net is None or tokenizer is None:
            raise FlipscopeError(f"{parsed.source}: models cannot be saved", fix="use an hf: or bundled: spec")
        head = net.get_output_embeddings()
        embed = net.get_input_embeddings()
        if head is not None and embed is not None and head.weight.data_ptr() != embed.weight.data_ptr():
            net.config.tie_word_embeddings = False  # a compressed head must not be re-tied to the embeddings on load
        record = {
            "spec": parsed.label(),
            "compression": [c.to_dict() for c in parsed.compression],
            "details": backend.info.details,
            "versions": library_versions(),
        }

        def write(tmp: Path) -> None:  # the folder appears whole: a killed save leaves no half-written model
            tmp.mkdir(parents=True)
            net.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / META_FILE).write_text(json.dumps(record, indent=2, default=str))

        folder.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(folder, write)
    finally:
        backend.close()
    log.info("saved %s to %s", parsed.label(), folder)
    return folder


@dataclass(frozen=True)
class SavedGGUF:
    """A GGUF file written by llama.cpp's quantizer: its size, and its tensors' types and bits (tensor data alone,
    block scales included: the file adds its metadata and alignment)."""

    path: Path
    file_bytes: int
    tensor_bits: int
    weights: int
    types: dict[str, dict[str, int]]  # tensor kind (its name without blk.N.) → type → tensors of it

    @property
    def bits_per_weight(self) -> float:
        return self.tensor_bits / self.weights


def save_gguf(spec: str | ModelSpec, out: str | Path) -> SavedGGUF:
    """A gguf: spec with a ``+ggml:`` step (a type, or a per-tensor plan) written as a GGUF file at ``out`` by
    llama.cpp's quantizer (a plain gguf: spec: the file copied)."""
    import shutil

    from flipscope.compress import GGMLConfig
    from flipscope.compress.gguf_types import total_bits
    from flipscope.models.gguf_file import resolve
    from flipscope.models.gguf_quantize import file_for, tensors_of

    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    target = Path(out)
    if target.exists():
        raise FlipscopeError(f"{target} exists", fix="choose a new --out file")
    steps = list(parsed.compression)
    if len(steps) > 1 or any(not isinstance(c, GGMLConfig) for c in steps):
        raise FlipscopeError(f"{parsed.label()}: a GGUF file is written by llama.cpp from one +ggml: step",
                             fix="e.g. gguf:model.gguf+ggml:Q4_K_M or +ggml:plan=plan.json")  # fmt: skip
    made = resolve(parsed.location)
    if steps:
        assert isinstance(steps[0], GGMLConfig)
        made = file_for(made, steps[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda tmp: shutil.copyfile(made, tmp))
    tensors = tensors_of(target)
    counts: dict[str, dict[str, int]] = {}
    for t in tensors:
        kind = re.sub(r"^blk\.\d+\.", "", t.name)
        counts.setdefault(kind, {})[t.qtype] = counts.setdefault(kind, {}).get(t.qtype, 0) + 1
    log.info("wrote %s as %s", parsed.label(), target)
    return SavedGGUF(target, target.stat().st_size, total_bits(tensors), sum(t.weights for t in tensors), counts)
