"""``vllm:<model or folder>[#tp=<n>]``: vLLM's offline engine, for models that need GPUs (``pip install vllm``).

Options are scored from ``prompt_logprobs``: every (context + option) is one prompt of token ids, generated with
``max_tokens=1`` and ``prompt_logprobs=0``, which returns, per prompt position, a dict holding at least the actual
token's ``Logprob`` (position 0 is ``None``: nothing predicts the first token). The option's log-likelihood is the
sum over its positions. All prompts of a pass go to the engine at once, so vLLM batches and shares prefixes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError
from flipscope.models._base import ModelInfo, OptionScores, RowSink

if TYPE_CHECKING:
    from flipscope.models.registry import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest

VLLM_PIP = "pip install vllm (a CUDA machine; vLLM pins its own torch)"


def parse_location(location: str) -> tuple[str, int]:
    model, _, options = location.partition("#")
    tp = 1
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key != "tp" or not value.isdigit() or int(value) < 1:
            raise FlipscopeError(f"cannot read vllm option {option!r}", fix="write vllm:<model>[#tp=<gpus>]")
        tp = int(value)
    return model, tp


def _value(entry: Any) -> float:
    """A vLLM ``Logprob`` (``.logprob``) or a plain float."""
    return float(getattr(entry, "logprob", entry))


def option_logprob(prompt_logprobs: Sequence[Mapping[int, Any] | None] | None, ids: Sequence[int], start: int) -> float:
    """Sum of log p(ids[i]) for positions start … len(ids)-1 of one prompt's ``prompt_logprobs``."""
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        raise FlipscopeError(
            "vLLM returned no prompt log-probabilities, or fewer than the prompt's tokens",
            fix="this vLLM build must support SamplingParams(prompt_logprobs=0)",
        )
    total = 0.0
    for position in range(start, len(ids)):
        entry = prompt_logprobs[position]
        if entry is None or ids[position] not in entry:
            raise FlipscopeError(f"vLLM gave no log-probability for prompt position {position}")
        total += _value(entry[ids[position]])
    return total


class VLLMBackend:
    def __init__(self, engine: Any, tokenizer: Any, info: ModelInfo) -> None:
        self.engine, self.tokenizer, self.info = engine, tokenizer, info

    @classmethod
    def load(cls, spec: ModelSpec, options: LoadOptions) -> VLLMBackend:
        from flipscope.models.hf import tokenizer_fingerprint

        if spec.compression:
            raise FlipscopeError(
                f"{spec.label()}: vLLM serves checkpoints as they are",
                fix="compress first (flipscope compress SPEC --out DIR) and give vllm:DIR",
            )
        try:
            import vllm
        except ImportError as exc:
            raise FlipscopeError("vllm: models need the vllm library", fix=VLLM_PIP) from exc
        model, tp = parse_location(spec.location)
        dtype = "auto" if options.dtype == "float32" else options.dtype
        engine = vllm.LLM(model=model, tensor_parallel_size=tp, dtype=dtype, seed=0)
        tokenizer = engine.get_tokenizer()
        info = ModelInfo(
            label=spec.label(),
            vocab_size=len(tokenizer),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            details={"engine": f"vllm {getattr(vllm, '__version__', '?')}", "tensor_parallel": tp, "dtype": dtype},
        )
        return cls(engine, tokenizer, info)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        import vllm

        prompts, spans = [], []
        for request in requests:
            context = self._ids(request.prefix) + self._ids(request.prompt)
            for option in request.continuations:
                ids = context + self._ids(option)
                prompts.append({"prompt_token_ids": ids})
                spans.append((ids, len(context)))
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        values = [option_logprob(o.prompt_logprobs, ids, start) for o, (ids, start) in zip(outputs, spans, strict=True)]
        out, at = [], 0
        for request in requests:
            n = len(request.continuations)
            counts = tuple(len(ids) - start for ids, start in spans[at : at + n])
            out.append(OptionScores(tuple(values[at : at + n]), counts))
            at += n
            if advance:
                advance(1)
        return out

    def close(self) -> None:
        self.engine = None
