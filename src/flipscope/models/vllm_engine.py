"""``vllm:<model or folder>[#tp=<n>][,pp=<n>][,executor=ray]``: vLLM's offline engine, for models that need GPUs
(``pip install vllm``); tensor and pipeline parallel across GPUs and, with Ray, machines.

Options are scored from ``prompt_logprobs``: every (context + option) is one prompt of token ids, generated with
``max_tokens=1`` and ``prompt_logprobs=k``, which returns, per prompt position, a dict holding the actual token's
``Logprob`` and the k most likely others (position 0 is ``None``: nothing predicts the first token). The option's
log-likelihood is the sum over its positions; the top-k (k = 20, vLLM's default ``max_logprobs``) give top-k
approximate token KL. All prompts of a pass go to the engine at once, so vLLM batches and shares prefixes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    TopKRows,
    finish_reason,
    seed_of,
)
from flipscope.models.hf_common import bos_prefix, tokenizer_fingerprint, tokenizer_pieces

if TYPE_CHECKING:
    from flipscope.models.options import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest

VLLM_PIP = "pip install vllm (a CUDA machine; vLLM pins its own torch)"
#: Alternatives per prompt token asked for when token KL is measured (vLLM's default max_logprobs).
TOPK = 20


#: vLLM's distributed executors (``distributed_executor_backend``): Ray across machines, multiprocessing on one.
EXECUTORS = ("ray", "mp", "uni")
LOCATION_FIX = (
    "write vllm:<model>[#key=value[,key=value...]] with keys tp (GPUs per stage), pp (stages), executor (ray|mp|uni)"
)


@dataclass(frozen=True)
class VLLMLayout:
    """How one ``vllm:`` model is laid out: ``tp`` GPUs per pipeline stage (tensor parallel), ``pp`` stages (pipeline
    parallel, e.g. one per machine), and vLLM's ``executor`` (None: vLLM chooses — Ray when tp × pp exceeds one
    machine's GPUs and a Ray cluster is running)."""

    model: str
    tp: int = 1
    pp: int = 1
    executor: str | None = None

    def engine_arguments(self) -> dict[str, Any]:
        """The ``vllm.LLM`` keyword arguments of this layout."""
        out: dict[str, Any] = {"model": self.model, "tensor_parallel_size": self.tp, "pipeline_parallel_size": self.pp}
        if self.executor is not None:
            out["distributed_executor_backend"] = self.executor
        return out


def parse_location(location: str) -> VLLMLayout:
    """``<model>[#tp=N][,pp=N][,executor=NAME]`` → its layout; anything else is a one-line error."""
    model, _, options = location.partition("#")
    if "=" in model or "," in model:
        raise FlipscopeError(f"cannot read vllm model {model!r}: options come after '#'", fix=LOCATION_FIX)
    sizes: dict[str, int] = {}
    executor = None
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key in ("tp", "pp") and value.isdigit() and int(value) >= 1 and key not in sizes:
            sizes[key] = int(value)
        elif key == "executor" and value in EXECUTORS and executor is None:
            executor = value
        else:
            raise FlipscopeError(f"cannot read vllm option {option!r}", fix=LOCATION_FIX)
    return VLLMLayout(model, sizes.get("tp", 1), sizes.get("pp", 1), executor)


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


def option_topk(
    prompt_logprobs: Sequence[Mapping[int, Any] | None], start: int, pieces: Sequence[str]
) -> TopKRows | None:
    """The top-k at positions start … end of one prompt, token ids named by their text (``pieces``)."""
    chosen = [entry for entry in prompt_logprobs[start:] if entry is not None]
    if len(chosen) != len(prompt_logprobs) - start:
        return None  # a position without log-probs: no rows rather than misaligned ones
    return TopKRows(tuple({pieces[i]: _value(v) for i, v in entry.items() if 0 <= i < len(pieces)} for entry in chosen))


class VLLMBackend:
    def __init__(self, engine: Any, tokenizer: Any, info: ModelInfo) -> None:
        self.engine, self.tokenizer, self.info = engine, tokenizer, info
        self.pieces: list[str] | None = None
        self.bos = bos_prefix(tokenizer)

    @classmethod
    def load(cls, spec: ModelSpec, options: LoadOptions) -> VLLMBackend:
        if spec.compression:
            raise FlipscopeError(
                f"{spec.label()}: vLLM serves checkpoints as they are",
                fix="compress first (flipscope compress SPEC --out DIR) and give vllm:DIR",
            )
        try:
            import vllm
        except ImportError as exc:
            raise FlipscopeError("vllm: models need the vllm library", fix=VLLM_PIP) from exc
        layout = parse_location(spec.location)
        dtype = "auto" if options.dtype == "float32" else options.dtype
        engine = vllm.LLM(**layout.engine_arguments(), dtype=dtype, seed=0, max_logprobs=TOPK)
        tokenizer = engine.get_tokenizer()
        context = getattr(getattr(engine.llm_engine, "model_config", None), "max_model_len", None)
        info = ModelInfo(
            label=spec.label(),
            vocab_size=len(tokenizer),
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
            details={
                "engine": f"vllm {getattr(vllm, '__version__', '?')}",
                "tensor_parallel": layout.tp,
                "pipeline_parallel": layout.pp,
                "executor": layout.executor or "vllm's choice",
                "dtype": dtype,
            },
            capabilities=Capabilities(
                rows="topk", topk=TOPK, chat=tokenizer.chat_template is not None, max_context=context
            ),
        )
        return cls(engine, tokenizer, info)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def vocabulary_pieces(self) -> list[str]:
        if self.pieces is None:
            self.pieces = tokenizer_pieces(self.tokenizer, self.info.vocab_size)
        return self.pieces

    def count_tokens(self, text: str) -> int:
        return len(self.bos) + len(self._ids(text))

    def generate(
        self,
        requests: Sequence[GenRequest],
        decoding: Decoding,
        *,
        advance: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """All requests in one vLLM call (continuous batching); chat requests through its chat API."""
        import vllm

        def params(index: int) -> Any:  # each request seeded on its own (Decoding.request_seed)
            return vllm.SamplingParams(max_tokens=decoding.max_new_tokens, temperature=decoding.temperature,
                                       seed=seed_of(requests[index], decoding, index),
                                       stop=list(decoding.stop) or None)  # fmt: skip

        results: dict[int, Generation] = {}
        for chat in (False, True):
            picked = [i for i, r in enumerate(requests) if r.chat == chat]
            if not picked:
                continue
            if chat:
                conversations = [requests[i].messages() for i in picked]
                outputs = self.engine.chat(conversations, [params(i) for i in picked], use_tqdm=False)
            else:
                prompts = [requests[i].prompt for i in picked]
                outputs = self.engine.generate(prompts, [params(i) for i in picked], use_tqdm=False)
            for i, o in zip(picked, outputs, strict=True):
                made = o.outputs[0]
                eos = made.finish_reason == "stop" and made.stop_reason is None  # vLLM names the stop string
                reason = finish_reason("eos" if eos else made.finish_reason)
                results[i] = Generation(str(made.text), reason, len(o.prompt_token_ids or []), len(made.token_ids))
                if advance:
                    advance(1)
        return [results[i] for i in range(len(requests))]

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
            context = self.bos + self._ids(request.prefix + request.prompt)
            for option in request.continuations:
                ids = context + self._ids(option)
                prompts.append({"prompt_token_ids": ids})
                spans.append((ids, len(context)))
        k = TOPK if rows is not None else 0
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k)
        outputs = self.engine.generate(prompts, params, use_tqdm=False)
        values = [option_logprob(o.prompt_logprobs, ids, start) for o, (ids, start) in zip(outputs, spans, strict=True)]
        out, at = [], 0
        for index, request in enumerate(requests):
            n = len(request.continuations)
            counts = tuple(len(ids) - start for ids, start in spans[at : at + n])
            out.append(OptionScores(tuple(values[at : at + n]), counts))
            for j in range(n if rows is not None else 0):
                top = option_topk(outputs[at + j].prompt_logprobs, spans[at + j][1], self.vocabulary_pieces())
                if rows is not None and top is not None:
                    rows(index, j, top)
            at += n
            if advance:
                advance(1)
        return out

    def close(self) -> None:
        self.engine = None
