"""``gguf:<file or bundled name>``: GGUF models through llama.cpp (llama-cpp-python), with full-vocabulary logits.

Multiple choice: a request's context is evaluated once; each option continues from it (the KV cache beyond the
context is dropped between options), and the option's log-likelihood is read from the logits of every position
(``logits_all``). The same rows feed answer-token KL and ``flipscope kld``. ``+ggml:<type>`` quantizes the file with
llama.cpp itself into the cache first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flipscope.errors import FlipscopeError
from flipscope.models.base import (
    Capabilities,
    Decoding,
    Generation,
    GenRequest,
    ModelInfo,
    OptionScores,
    PromptTokens,
    RowSink,
    finish_reason,
    nonfinite_scores,
    seed_of,
    vocabulary_fingerprint,
)
from flipscope.models.gguf_file import ENGINE_SETTINGS, file_type, require_llama_cpp, resolve
from flipscope.models.gguf_quantize import file_for

if TYPE_CHECKING:
    import torch

    from flipscope.models.options import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest
    from flipscope.tasks.corpus import Window

log = logging.getLogger(__name__)

#: Context window the model is created with: the longest prompt + option, or kld window, it can take.
N_CTX = 4096


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """logits: [T, V] → log-probabilities [T, V] (float32), computed in float64."""
    x = logits.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    out = x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
    return out.astype(np.float32)


class GGUFBackend:
    def __init__(self, llm: Any, label: str, details: dict[str, object]) -> None:
        self.llm = llm
        vocab = int(llm.n_vocab())
        fingerprint = vocabulary_fingerprint((llm._model.token_get_text(i), i) for i in range(vocab))
        chat = bool(llm.metadata.get("tokenizer.chat_template"))
        self.n_ctx = int(llm.n_ctx())
        capabilities = Capabilities(rows="full", greedy=True, chat=chat, max_context=self.n_ctx)
        self.info = ModelInfo(
            label=label, vocab_size=vocab, tokenizer_fingerprint=fingerprint, details=details, capabilities=capabilities
        )
        #: The model's BOS token, where its tokenizer starts every input with one (as transformers does).
        self.bos = [int(llm.token_bos())] if llm._model.add_bos_token() else []

    @classmethod
    def load(cls, spec: ModelSpec, options: LoadOptions) -> GGUFBackend:
        from flipscope.compress import GGMLConfig

        llama_cpp = require_llama_cpp()
        path = resolve(spec.location)
        steps = list(spec.compression)
        if any(not isinstance(c, GGMLConfig) for c in steps) or len(steps) > 1:
            raise FlipscopeError(
                f"{spec.label()}: a gguf: model takes one llama.cpp quantization (+ggml:<type>) and nothing else",
                fix="compress an hf: model for the other methods, or quantize the GGUF with +ggml:Q4_K_M",
            )
        source_type = file_type(path)
        if steps:
            config = steps[0]
            assert isinstance(config, GGMLConfig)
            path = file_for(path, config)
        gpu = options.resolved().device.startswith("cuda")
        n_ctx = max(N_CTX, options.context or 0)  # the keys and values of n_ctx positions are allocated up front
        with _extra_buffer_types(llama_cpp, enabled=_extra_buffers_safe()):
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                logits_all=True,
                **ENGINE_SETTINGS,
                n_threads=os.cpu_count() or 1,
                n_gpu_layers=-1 if gpu else 0,
                seed=0,
                verbose=False,
            )
        details = {
            "file": str(path),
            "source_file_type": source_type,
            "llama_cpp": getattr(llama_cpp, "__version__", "unknown"),
            "n_ctx": n_ctx,
            **ENGINE_SETTINGS,
            "compression": {c.label(): {"library": "llama.cpp"} for c in steps},
        }
        return cls(llm, spec.label(), details)

    def _tokens(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        out: list[OptionScores] = []
        bad: set[int] = set()  # requests with NaN or infinite logits: scored NaN, reported per item
        for index, request in enumerate(requests):
            context = self.bos + self._tokens(request.prefix + request.prompt)  # one text, as servers see it
            options = [self._tokens(c) for c in request.continuations]
            if not context or len(context) + max(len(o) for o in options) > self.n_ctx:
                raise FlipscopeError(
                    f"{self.info.label}: request {index} is empty or longer than the {self.n_ctx}-token context",
                    fix="use fewer few-shot examples",
                )
            self.llm.reset()
            self.llm.eval(context)
            sums, counts, greedy = [], [], []
            for option_index, ids in enumerate(options):
                self.llm.n_tokens = len(context)  # continue from the context; eval drops the cache beyond it
                self.llm.eval(ids)
                logits = np.array(self.llm.scores[len(context) - 1 : len(context) - 1 + len(ids)])  # [T, V]
                if not np.isfinite(logits).all():
                    bad.add(index)
                logprobs = log_softmax(logits)
                if rows is not None:
                    rows(index, option_index, logprobs)
                sums.append(float(logprobs[np.arange(len(ids)), ids].sum()))
                counts.append(len(ids))
                greedy.append(bool((logits.argmax(axis=-1) == np.asarray(ids)).all()))  # ties: the lowest id
            out.append(OptionScores(tuple(sums), tuple(counts), tuple(greedy)))
            if advance:
                advance(1)
        return nonfinite_scores(out, bad, self.info.label)

    def corpus_logprobs(
        self, windows: Sequence[Window], *, rows: int = 256, normalized: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Log-probs at each window's scored positions, ``rows`` at a time. llama.cpp computes logits only at the
        scored positions (as llama-perplexity does) and they are read in place from its output buffer: no
        full-window logits, no copy into llama-cpp-python's score table."""
        import torch

        for window in windows:
            if len(window.ids) > self.n_ctx:
                raise FlipscopeError(f"--ctx {len(window.ids)} exceeds the gguf backend's {self.n_ctx}-token context")
            targets = torch.tensor(window.ids[window.first + 1 :])
            at = 0
            for logits in self._scored_logits(list(window.ids), window.first):  # [n, V], valid until the next one
                for start in range(0, logits.shape[0], rows):
                    part = torch.from_numpy(logits[start : start + rows])  # a view of llama.cpp's buffer
                    if normalized:  # NaN rows: the window is left out
                        part = part - torch.logsumexp(part, dim=-1, keepdim=True)
                    yield part, targets[at : at + part.shape[0]]
                    at += part.shape[0]

    def _scored_logits(self, ids: list[int], first: int) -> Iterator[np.ndarray]:
        """Evaluate ``ids`` from an empty cache with logits requested at positions first … len(ids)−2 only; yields
        each decode call's logits [n, V] as a view of llama.cpp's buffer, valid until the next is asked for."""
        if len(ids) > self.n_ctx:
            raise FlipscopeError(f"a window of {len(ids)} tokens exceeds the gguf backend's {self.n_ctx}-token context",
                                 fix="load it with LoadOptions(context=…) (kld --ctx does)")  # fmt: skip
        ctx, batch = self.llm._ctx, self.llm._batch
        ctx.kv_cache_clear()
        self.llm.reset()  # llama-cpp-python's own token bookkeeping: empty, as the cache now is
        n_batch, vocab, last = self.llm.n_batch, self.info.vocab_size, len(ids) - 1
        for begin in range(0, len(ids), n_batch):
            chunk = ids[begin : begin + n_batch]
            raw = batch.batch
            raw.n_tokens = len(chunk)
            outputs = 0
            for j, token in enumerate(chunk):
                raw.token[j], raw.pos[j], raw.n_seq_id[j] = token, begin + j, 1
                raw.seq_id[j][0] = 0
                wanted = first <= begin + j < last
                raw.logits[j] = wanted
                outputs += wanted
            ctx.decode(batch)
            if outputs:
                yield np.ctypeslib.as_array(ctx.get_logits(), shape=(outputs, vocab))
        ctx.kv_cache_clear()

    def encode_corpus(self, text: str) -> tuple[list[int], int | None]:
        return self._tokens(text), self.bos[0] if self.bos else None

    def vocabulary_pieces(self) -> list[str]:
        return [bytes(self.llm.detokenize([i])).decode("utf-8", errors="replace") for i in range(self.info.vocab_size)]

    def count_tokens(self, text: str) -> int:
        return len(self.bos) + len(self._tokens(text))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self.llm.detokenize(list(ids))).decode("utf-8", errors="replace")

    def generate(
        self,
        requests: Sequence[GenRequest],
        decoding: Decoding,
        *,
        advance: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """One request at a time through llama.cpp (raw completion, or the GGUF's chat template)."""
        out = []
        settings = {"max_tokens": decoding.max_new_tokens, "temperature": decoding.temperature,
                    "stop": list(decoding.stop) or None}  # fmt: skip
        for index, request in enumerate(requests):
            self.llm.reset()
            settings["seed"] = seed_of(request, decoding, index)
            try:
                if request.chat and self.info.capabilities.chat:
                    answer = self.llm.create_chat_completion(messages=request.messages(), **settings)
                    text = answer["choices"][0]["message"]["content"] or ""
                else:
                    answer = self.llm.create_completion(prompt=request.plain(), **settings)
                    text = answer["choices"][0]["text"] or ""
            except ValueError as exc:  # llama-cpp-python: "Requested tokens (…) exceed context window of …"
                raise FlipscopeError(
                    f"{self.info.label}: prompt {index} cannot be generated from ({exc})",
                    fix="lower --max-new-tokens or use a shorter prompt",
                ) from exc
            usage = answer.get("usage") or {}
            reason = finish_reason(answer["choices"][0].get("finish_reason"))
            ids = tuple(self._tokens(str(text)))
            out.append(Generation(str(text), reason, usage.get("prompt_tokens"), usage.get("completion_tokens"), ids))
            if advance:
                advance(1)
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None


def prompt_tokens(location: str, request: GenRequest) -> PromptTokens:
    """What ``GGUFBackend.generate`` gives llama.cpp for ``request``, read from the file's vocabulary alone (no
    weights): for a chat request, the ids llama-cpp-python's chat handler for the file's template generates from
    (``create_chat_completion``'s own handler, stopped before it generates); for plain text, what
    ``create_completion`` feeds (BOS where the vocabulary adds it, then the text's tokens, special tokens parsed)."""
    llama_cpp = require_llama_cpp()
    with _quiet_stderr():  # a vocabulary-only context warns that it exceeds the (absent) training context
        llm = llama_cpp.Llama(model_path=str(resolve(location)), vocab_only=True, verbose=False)
    try:
        return llm_prompt(llm, request)
    finally:
        llm.close()


def llm_prompt(llm: Any, request: GenRequest) -> PromptTokens:
    """``prompt_tokens`` for a ``llama_cpp.Llama`` already created (its chat handler as it is set)."""
    chat = request.chat and (llm.chat_handler is not None or bool(llm.metadata.get("tokenizer.chat_template")))
    if chat:
        probe = _Probe(llm)
        with contextlib.suppress(_Prompted):
            _chat_handler(llm)(llama=probe, messages=request.messages())
        text, ids = probe.text, probe.ids
    else:
        text = request.plain()
        bos = [int(llm.token_bos())] if llm._model.add_bos_token() else []
        ids = bos + (list(llm.tokenize(text.encode(), add_bos=False, special=True)) if text else [])
    pieces = [bytes(llm.detokenize([i], special=True)).decode("utf-8", errors="replace") for i in ids]
    return PromptTokens(text, tuple(ids), tuple(pieces), chat=chat)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a while: llama.cpp writes some notices there whatever ``verbose`` says."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _chat_handler(llm: Any) -> Any:
    """The chat handler ``Llama.create_chat_completion`` uses (its own lookup)."""
    from llama_cpp import llama_chat_format

    return (
        llm.chat_handler
        or llm._chat_handlers.get(llm.chat_format)
        or llama_chat_format.get_chat_completion_handler(llm.chat_format)
    )


class _Prompted(Exception):
    """Raised by ``_Probe`` where a chat handler starts generating: its prompt is known by then."""


class _Probe:
    """Stands in for the ``Llama`` a chat handler is given: the model's vocabulary as usual, recording the text it
    tokenises and the ids it would generate from, and stopping there."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.text = ""
        self.ids: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        self.text = text.decode("utf-8")
        return list(self.llm.tokenize(text, add_bos, special))

    def create_completion(self, prompt: list[int], **kwargs: Any) -> Any:
        self.ids = [int(i) for i in prompt]
        raise _Prompted


def _extra_buffers_safe() -> bool:
    """llama.cpp's extra CPU buffer types (weight repacking, AMX tiles) crashed with a segmentation fault on
    quantized weights on an AMX CPU in a sandbox; they stay off on AMX CPUs unless FLIPSCOPE_LLAMA_EXTRA_BUFTS=1."""
    setting = os.environ.get("FLIPSCOPE_LLAMA_EXTRA_BUFTS")
    if setting is not None:
        return setting == "1"
    try:
        with open("/proc/cpuinfo") as info:
            return "amx_int8" not in info.read()
    except OSError:
        return True


@contextlib.contextmanager
def _extra_buffer_types(llama_cpp: Any, *, enabled: bool) -> Iterator[None]:
    """Create models with ``use_extra_bufts`` set as asked (llama-cpp-python does not expose it)."""
    bindings = llama_cpp.llama_cpp  # the module llama_cpp.Llama reads its defaults from
    original = bindings.llama_model_default_params

    def params() -> Any:
        value = original()
        value.use_extra_bufts = enabled
        return value

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = original
