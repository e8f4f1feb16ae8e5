"""transformers backend: a causal LM from a local folder or the hub, optionally compressed on load."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError
from flipscope.models.base import (
    Capabilities,
    Decoding,
    Generation,
    GenRequest,
    ModelInfo,
    OptionScores,
    RowSink,
)
from flipscope.models.hf_common import (
    bos_prefix,
    context_ids,
    has_chat_template,
    prompt_ids,
    prompt_text,
    quiet_transformers,
    tokenizer_fingerprint,
    tokenizer_pieces,
)
from flipscope.models.hf_files import read_config

if TYPE_CHECKING:
    import torch

    from flipscope.models.options import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest
    from flipscope.tasks.corpus import Window

log = logging.getLogger(__name__)


def release_freed_memory() -> None:
    """Hand memory freed by a closed model back to the system (glibc keeps freed heap pages otherwise, so the next
    model of a comparison would stack on top of the last one's peak); a no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def max_context(config: Any) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


#: quant_method in a checkpoint's config.json → (modules transformers needs to load it, the pip line).
CHECKPOINT_LIBRARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "gptq": (("optimum", "gptqmodel"), "optimum gptqmodel"),
    "awq": (("gptqmodel",), "gptqmodel"),
    "compressed-tensors": (("compressed_tensors",), "compressed-tensors"),
    "bitsandbytes": (("bitsandbytes",), "bitsandbytes"),
    "hqq": (("hqq",), "hqq"),
    "quanto": (("optimum.quanto",), "optimum-quanto"),
    "torchao": (("torchao",), "torchao"),
}


def checkpoint_quantization(location: str) -> str | None:
    """The quant_method of an already quantized checkpoint folder (None for plain weights); refuses, with the pip
    line, one whose library is missing."""
    import importlib.util

    quant = (read_config(location) or {}).get("quantization_config") or {}
    method = str(quant.get("quant_method", "")) or None
    if method in CHECKPOINT_LIBRARIES:
        modules, pip = CHECKPOINT_LIBRARIES[method]
        missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            raise FlipscopeError(
                f"model folder {location} is a {method} checkpoint; loading it needs {', '.join(missing)}",
                fix=f"pip install {pip}",
            )
    return method


class HFBackend:
    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, device: str, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, spec: ModelSpec, location: str, options: LoadOptions) -> HFBackend:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from flipscope.compress import CompressionContext, apply_compression

        quiet_transformers()

        dtype = getattr(torch, options.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise FlipscopeError(f"unknown dtype {options.dtype!r}", fix="use float32, bfloat16 or float16")
        device = options.resolved().device
        at_load = spec.compression[0] if spec.compression and spec.compression[0].at_load else None
        extra = at_load.load_kwargs(device) if at_load else {}
        checkpoint = checkpoint_quantization(location)
        if checkpoint and at_load:
            raise FlipscopeError(
                f"{spec.label()}: the checkpoint is already {checkpoint}-quantized; {at_load.label()} cannot load it",
                fix="drop the load-time method, or start from the unquantized model",
            )
        if checkpoint and not at_load:
            extra = {"device_map": device}
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **extra)
        except ImportError as exc:
            raise FlipscopeError(
                f"cannot load model {spec.base().label()!r}: {str(exc).strip().splitlines()[0]}",
                fix="install the library named above",
            ) from exc
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FlipscopeError(
                f"cannot load model {spec.base().label()!r}: {first}",
                fix="give a folder with config.json and weights, or a hub id when the hub is reachable",
            ) from exc
        if at_load is None and checkpoint is None:
            model.to(device)  # quantized models are placed by their loader
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
                "checkpoint_quantization": checkpoint,
                "parameters": int(model.num_parameters()),  # counts packed 4-bit weights as the weights they hold
            },
            capabilities=Capabilities(
                rows="full", greedy=True, chat=has_chat_template(tokenizer), max_context=max_context(model.config)
            ),
        )
        return cls(model, tokenizer, info, device, options.batch_size)

    def vocabulary_pieces(self) -> list[str]:
        return tokenizer_pieces(self.tokenizer, self.info.vocab_size)

    def count_tokens(self, text: str) -> int:
        return len(bos_prefix(self.tokenizer)) + len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(
        self,
        requests: Sequence[GenRequest],
        decoding: Decoding,
        *,
        advance: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Batched, left-padded, one key/value cache per batch (see ``_hf_generate``)."""
        from flipscope.models._hf_generate import generate

        return generate(
            self.model,
            self.tokenizer,
            self.device,
            requests,
            decoding,
            bos=bos_prefix(self.tokenizer),
            info=self.info,
            batch_size=self.batch_size,
            advance=advance,
        )

    def chat_prompt(self, request: GenRequest) -> str:
        """The text ``generate`` continues for ``request`` (its chat template applied): what teacher-forced scoring
        puts before an answer. Scored, it gives the model exactly the ids ``generate`` gives it (``prompt_ids``);
        a template where it would not (the tokenizer puts BOS first, the template writes none) is refused."""
        chat, bos = self.info.capabilities.chat, bos_prefix(self.tokenizer)
        text = prompt_text(self.tokenizer, request, chat)
        if context_ids(self.tokenizer, text, bos) != prompt_ids(self.tokenizer, request, chat=chat, bos=bos):
            raise FlipscopeError(
                f"{self.info.label}: its chat template's ids cannot be scored teacher-forced as generation gives "
                "them (the tokenizer puts BOS first, the template writes none)",
                fix="start the chat template with {{ bos_token }}, or use a tokenizer that adds no BOS",
            )
        return text

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        from flipscope.models._hf_score import PrefixScorer

        scorer = PrefixScorer(self.model, self.tokenizer, self.device, label=self.info.label, max_batch=self.batch_size)
        return scorer.score(requests, rows=rows, advance=advance)

    def corpus_logprobs(
        self, windows: Sequence[Window], *, rows: int = 256, normalized: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The decoder runs once per batch of windows; the output head and log-softmax run ``rows`` positions at a
        time, so the full [positions × vocabulary] logits never exist at once."""
        import torch

        if not windows:
            return
        first, length = windows[0].first, len(windows[0].ids)
        if any(w.first != first or len(w.ids) != length for w in windows):
            raise ValueError("windows of one call must share their length and first scored position")
        head = self.model.get_output_embeddings()
        decoder = self.model.get_decoder()
        ids = torch.tensor([w.ids for w in windows], device=self.device)  # [B, T]
        with torch.no_grad():
            hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state  # [B, T, H]
            hidden = hidden[:, first : length - 1].reshape(-1, hidden.shape[-1])  # [B·n, H]
            targets = ids[:, first + 1 : length].reshape(-1)  # [B·n]
            for start in range(0, hidden.shape[0], rows):
                logits = self._final_logits(head(hidden[start : start + rows]).float())  # [s, V]
                if normalized:  # NaN logits give NaN rows: their windows are reported and left out
                    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
                yield logits.cpu(), targets[start : start + rows].cpu()

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def encode_corpus(self, text: str) -> tuple[list[int], int | None]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        bos = bos_prefix(self.tokenizer)
        return ids, bos[0] if bos else None

    def _final_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's own forward does after the head: logit scaling and soft-capping, where configured."""
        config = self.model.config
        scale = getattr(config, "logits_scaling", None)
        if scale:
            logits = logits / scale
        cap = getattr(config, "final_logit_softcapping", None)
        if cap:
            logits = (logits / cap).tanh() * cap
        return logits

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()
        release_freed_memory()
