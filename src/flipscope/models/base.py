"""The one small interface every backend implements, and the records it returns."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol, Union

from flipscope.errors import FlipscopeError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from flipscope.tasks import ScoreRequest
    from flipscope.tasks.corpus import Window


def vocabulary_fingerprint(pieces: Iterable[tuple[str, int]]) -> str:
    """Identity of a vocabulary: its (token text, id) pairs in id order. Every backend computes it here, so that
    two engines reading the same vocabulary (transformers and llama.cpp) agree and token KL can cross them.
    SentencePiece's space mark "▁" counts as a space: transformers' GGUF reader writes Gemma 3's whitespace-run
    tokens as "▁▁…" where llama.cpp keeps "  …", the same tokens."""
    ordered = [[text.replace("\u2581", " "), i] for text, i in sorted(pieces, key=lambda pair: pair[1])]
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest()[:20]


def nonfinite_logits(label: str, where: str) -> FlipscopeError:
    """The error for NaN or infinite logits from ``label`` at ``where`` (a request, a window)."""
    return FlipscopeError(
        f"model {label} produced NaN or infinite logits on {where}",
        fix="check its compression settings, or run in float32 (--dtype float32)",
    )


def nonfinite_scores(scores: list[OptionScores], bad: set[int], label: str) -> list[OptionScores]:
    """``scores`` with the requests in ``bad`` (NaN or infinite logits) set to NaN, logged: each such item is
    reported and left out of every metric (``ItemScore.finite``), the rest of the pass stands."""
    if not bad:
        return scores
    log.warning(
        "model %s produced NaN or infinite logits on %d of %d requests: those items are left out of every metric "
        "and listed in the summary (check its compression settings, or run in float32)",
        label,
        len(bad),
        len(scores),
    )
    nan = float("nan")
    return [
        OptionScores(tuple(nan for _ in s.logprobs), s.n_tokens, s.greedy) if i in bad else s
        for i, s in enumerate(scores)
    ]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can give; the task layer checks these before it runs anything.

    ``rows``: "full" = log-probabilities over the whole vocabulary at every answer token (exact token KL, `kld`);
    "topk" = only the ``topk`` most likely tokens there, named by their text (token KL is top-k approximate);
    None = no per-token distributions. ``multiple_choice`` false comes with ``note`` saying why. ``greedy``: its
    scores say whether each continuation is the greedy decoding (``OptionScores.greedy``), as a task scored by
    greedy match (LAMBADA) needs.
    """

    multiple_choice: bool = True
    rows: Literal["full", "topk"] | None = "full"
    greedy: bool = False
    topk: int = 0
    chat: bool = True
    max_context: int | None = None
    note: str = ""
    fix: str = ""


@dataclass(frozen=True)
class ModelInfo:
    label: str
    vocab_size: int
    tokenizer_fingerprint: str
    details: dict[str, object]
    capabilities: Capabilities = field(default_factory=Capabilities)


@dataclass(frozen=True)
class TopKRows:
    """T answer tokens as a server or engine that gives only the k most likely tokens returns them: per position,
    token text → log-probability (the actual token included where the server adds it)."""

    tokens: tuple[Mapping[str, float], ...]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class OptionScores:
    """Summed log-likelihood and token count of each continuation of one request; ``greedy``: whether each is the
    greedy decoding — every token the argmax of its row given the context and the continuation's earlier tokens
    (lm-eval's ``is_greedy``; a tie goes to the lower token id, as ``argmax`` breaks it) — None where the backend
    cannot tell (``Capabilities.greedy``)."""

    logprobs: tuple[float, ...]
    n_tokens: tuple[int, ...]
    greedy: tuple[bool, ...] | None = None


class StopReason(StrEnum):
    """Why a generation ended: a stop string, the end-of-sequence token, or ``max_new_tokens``. llama.cpp and
    OpenAI-compatible servers report both of the first two as "stop": there ``STOP`` means either."""

    STOP = "stop"
    EOS = "eos"
    LENGTH = "length"


@dataclass(frozen=True)
class GenRequest:
    """One generation: ``prompt`` is raw text continued as is, or (``chat``) the user's message, wrapped in the
    model's chat template after an optional ``system`` message and the conversation's earlier ``history``
    ((user, assistant) turns). ``seed``: the request's own seed when sampling (a pass gives each item
    ``Decoding.request_seed`` of its index in the task, so its draw does not depend on which items share a call);
    None: ``seed_of`` derives one from its place in the call."""

    prompt: str
    chat: bool = False
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    seed: int | None = None

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat messages, ending with the user's message (the one rule every backend uses)."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.history:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return [*out, {"role": "user", "content": self.prompt}]

    def plain(self) -> str:
        """The text a model without a chat template continues: the prompt as is, or, for a chat request with a
        system message or earlier turns, the conversation as a plain transcript."""
        if not (self.chat and (self.history or self.system)):
            return self.prompt
        lines = [self.system + "\n"] if self.system else []
        for user, assistant in self.history:
            lines += [f"User: {user}", f"Assistant: {assistant}"]
        return "\n".join([*lines, f"User: {self.prompt}", "Assistant:"])


@dataclass(frozen=True)
class Decoding:
    """Decoding settings, shared by every backend (and part of a generation pass's cache key). Greedy at
    temperature 0; sampling uses ``seed`` (transformers: one generator for the pass; backends that seed each
    request: ``request_seed``)."""

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    seed: int = 0

    def request_seed(self, index: int) -> int:
        """The seed of a task's ``index``-th item when sampling: each request is seeded on its own, distinct for
        every (seed, item) of up to a million items, so the items of one draw do not share one random stream
        (which would tie their draws together)."""
        return (self.seed * 1_000_003 + index) % (1 << 31)


def seed_of(request: GenRequest, decoding: Decoding, index: int) -> int:
    """The seed a backend samples ``request`` with: its own, else ``decoding.request_seed`` of its ``index`` in the
    call."""
    return request.seed if request.seed is not None else decoding.request_seed(index)


@dataclass(frozen=True)
class Generation:
    """A generated answer, cut before its first stop string; token counts as the backend reports them;
    ``token_ids``: the answer's text tokenised alone, where the backend has the tokenizer (for first divergence)."""

    text: str
    stop_reason: StopReason
    prompt_tokens: int | None
    new_tokens: int | None
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PromptTokens:
    """What a model is given for one request (``flipscope prompt``): the ``text`` its tokenizer reads (the chat
    template rendered, where one applies), the token ``ids`` fed to the model, and each id's text alone
    (``pieces``, special tokens shown). ``chat``: whether a chat template was applied."""

    text: str
    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    chat: bool


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest of the ``stop`` strings, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def finish_reason(reason: object) -> StopReason:
    """An engine's or server's ``finish_reason`` ("stop", "length", "eos") as a StopReason."""
    if reason == "length":
        return StopReason.LENGTH
    return StopReason.EOS if reason == "eos" else StopReason.STOP


#: Receives the distributions predicting each token of one continuation: (request index, option index, rows) with
#: rows either full-vocabulary log-probabilities [T, V] float32 (valid only during the call) or ``TopKRows``.
RowSink = Callable[[int, int, Union["np.ndarray", TopKRows]], None]


class Backend(Protocol):
    """Every backend: score options (with full or top-k rows, as ``info.capabilities`` says), generate chat
    answers, and name its vocabulary's tokens as text (for top-k KL against a server)."""

    info: ModelInfo

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        """Score every continuation of every request; call ``advance(1)`` after each request."""
        ...

    def generate(
        self,
        requests: Sequence[GenRequest],
        decoding: Decoding,
        *,
        advance: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Generate for every request (several per forward pass where the engine can); ``advance(1)`` after each."""
        ...

    def vocabulary_pieces(self) -> list[str] | None:
        """The text of every token id alone (None where the vocabulary is not known, as behind a server)."""
        ...

    def count_tokens(self, text: str) -> int | None:
        """How many tokens ``text`` is (None where unknown)."""
        ...

    def close(self) -> None: ...


class CorpusBackend(Protocol):
    """A backend that gives full-vocabulary log-probabilities on text (for `flipscope kld`)."""

    info: ModelInfo

    def corpus_logprobs(
        self, windows: Sequence[Window], *, rows: int = 256, normalized: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (log-probs [s ≤ rows, V] float32, next-token ids [s]) slices covering, in order, every scored
        position of ``windows``. At most one slice of rows × V is materialised at a time. ``normalized`` False:
        the rows are the model's scores (logits: log-probs up to a constant per row), for a consumer that
        normalises them itself (``metrics.corpus_kl.position_stats``) — a slice may then be a read-only view,
        valid until the next is asked for."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids → text, for showing context."""
        ...

    def encode_corpus(self, text: str) -> tuple[list[int], int | None]:
        """Token ids of ``text`` (no special tokens), and the BOS id where this tokenizer starts inputs with one."""
        ...

    def close(self) -> None: ...
