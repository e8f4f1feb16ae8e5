"""The one small interface every backend implements, and the records it returns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from flipscope.tasks import ScoreRequest
    from flipscope.tasks.corpus import Window


def vocabulary_fingerprint(pieces: Iterable[tuple[str, int]]) -> str:
    """Identity of a vocabulary: its (token text, id) pairs in id order. Every backend computes it here, so that
    two engines reading the same vocabulary (transformers and llama.cpp) agree and token KL can cross them."""
    ordered = [list(pair) for pair in sorted(pieces, key=lambda pair: pair[1])]
    return hashlib.sha256(json.dumps(ordered, ensure_ascii=False).encode()).hexdigest()[:20]


def nonfinite_logits(label: str, where: str) -> FlipscopeError:
    """The error for NaN or infinite logits from ``label`` at ``where`` (a request, a window)."""
    return FlipscopeError(
        f"model {label} produced NaN or infinite logits on {where}",
        fix="check its compression settings, or run in float32 (--dtype float32)",
    )


@dataclass(frozen=True)
class ModelInfo:
    label: str
    vocab_size: int
    tokenizer_fingerprint: str
    details: dict[str, object]


@dataclass(frozen=True)
class OptionScores:
    """Summed log-likelihood and token count of each continuation of one request."""

    logprobs: tuple[float, ...]
    n_tokens: tuple[int, ...]


#: Receives the full-vocabulary log-probabilities predicting each token of one continuation:
#: (request index, option index, logprobs [T, V] float32). Rows are only valid during the call.
RowSink = Callable[[int, int, "np.ndarray"], None]


class Backend(Protocol):
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

    def close(self) -> None: ...


class CorpusBackend(Protocol):
    """A backend that gives full-vocabulary log-probabilities on text (for `flipscope kld`)."""

    info: ModelInfo

    def corpus_logprobs(
        self, windows: Sequence[Window], *, rows: int = 256
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (log-probs [s ≤ rows, V] float32, next-token ids [s]) slices covering, in order, every scored
        position of ``windows``. At most one slice of rows × V is materialised at a time."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids → text, for showing context."""
        ...

    def encode_corpus(self, text: str) -> tuple[list[int], int | None]:
        """Token ids of ``text`` (no special tokens), and the BOS id where this tokenizer starts inputs with one."""
        ...

    def close(self) -> None: ...
