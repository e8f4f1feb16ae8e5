"""transformers backend: a causal LM from a local folder or the hub, optionally compressed on load."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError
from flipscope.models._base import ModelInfo, OptionScores, RowSink

if TYPE_CHECKING:
    from flipscope.models.registry import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:20]


def quiet_transformers() -> None:
    """Progress goes through flipscope's display; transformers' own bars and notices stay off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device

    @classmethod
    def load(cls, spec: ModelSpec, location: str, options: LoadOptions) -> HFBackend:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from flipscope.compress import CompressionContext, apply_compression

        quiet_transformers()

        dtype = getattr(torch, options.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise FlipscopeError(f"unknown dtype {options.dtype!r}", fix="use float32, bfloat16 or float16")
        device = _device(options.device)
        at_load = spec.compression[0] if spec.compression and spec.compression[0].at_load else None
        extra = at_load.load_kwargs(device) if at_load else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **extra)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FlipscopeError(
                f"cannot load model {spec.base().label()!r}: {first}",
                fix="give a folder with config.json and weights, or a hub id when the hub is reachable",
            ) from exc
        if at_load is None:
            model.to(device)  # quantized-at-load models are placed by their loader
        model.eval()
        stats: dict[str, Any] = {}
        for config in spec.compression:
            if config is at_load:
                stats[config.label()] = config.stats()
                continue
            log.info("applying %s to %s", config.label(), spec.base().label())
            stats[config.label()] = apply_compression(config, model, CompressionContext(tokenizer, device))
        info = ModelInfo(
            label=spec.label(),
            vocab_size=int(model.get_output_embeddings().weight.shape[0]),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            details={
                "dtype": options.dtype,
                "device": device,
                "compression": stats,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
        )
        return cls(model, tokenizer, info, device)

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        from flipscope.models._hf_score import PrefixScorer

        scorer = PrefixScorer(self.model, self.tokenizer, self.device, label=self.info.label)
        return scorer.score(requests, rows=rows, advance=advance)

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()
