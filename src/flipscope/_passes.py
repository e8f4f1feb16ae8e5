"""One model over one task: score every item, and either record the baseline's answer-token distributions
(compact top-k form) or measure a candidate's answer-token KL against them as the rows stream by."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from flipscope.metrics import ItemScore
from flipscope.metrics.token_kl import CompactRows, compress_topk, concat_rows, kl_compact
from flipscope.models import Backend
from flipscope.store import PassResult, ReferenceRows
from flipscope.tasks import ScoreRequest, TaskData

log = logging.getLogger(__name__)


class TopKRecorder:
    """Row sink of a baseline pass: keeps each answer token's top-k log-probs and tail mass."""

    def __init__(self, k: int, samples: int) -> None:
        self.k = k
        self.samples = samples
        self.parts: dict[tuple[int, int], CompactRows] = {}

    def __call__(self, request: int, option: int, logprobs: np.ndarray) -> None:
        # [T, V] → [T, k] head + [T, m] tail samples, seeded by position so any scoring order gives the same draws
        self.parts[(request, option)] = compress_topk(logprobs, self.k, self.samples, seed=[request, option])

    def result(self) -> ReferenceRows | None:
        """Rows laid out in (request, option) order, whatever order the backend scored them in."""
        if not self.parts:
            return None  # the backend gives no full-vocabulary rows
        ordered = [self.parts[key] for key in sorted(self.parts)]
        lengths = np.array([len(part) for part in ordered], dtype=np.int64)
        ends = np.cumsum(lengths)
        return ReferenceRows(concat_rows(ordered), np.stack([ends - lengths, ends], axis=1))


class KLMeter:
    """Row sink of a candidate pass: answer-token KL(baseline‖candidate) per option, against stored rows."""

    def __init__(self, reference: ReferenceRows, offsets: list[int]) -> None:
        self.reference = reference
        self.offsets = offsets  # offsets[i] = index of request i's first (item, option) in the reference
        self.per_item: dict[int, list[float]] = defaultdict(list)
        self.mismatched: set[int] = set()

    def __call__(self, request: int, option: int, logprobs: np.ndarray) -> None:
        ref = self.reference.option(self.offsets[request] + option)
        if len(ref) != logprobs.shape[0]:
            self.mismatched.add(request)  # the options tokenised differently: no per-token comparison
            return
        self.per_item[request].append(float(np.mean(kl_compact(ref, logprobs))))

    def item_kl(self, request: int, n_options: int) -> float | None:
        values = self.per_item.get(request, [])
        if request in self.mismatched or len(values) != n_options:
            return None
        return float(np.mean(values))


def run_pass(
    backend: Backend,
    task: TaskData,
    requests: list[ScoreRequest],
    *,
    key: str,
    topk: int | None,
    tail_samples: int = 0,
    reference: ReferenceRows | None,
    progress: Callable[[int], None] | None,
) -> PassResult:
    """Score ``requests`` (one per ``task.items``). ``topk`` set: record compact rows (a baseline).
    ``reference`` set: measure answer-token KL against it (a candidate)."""
    recorder = TopKRecorder(topk, tail_samples) if topk else None
    meter = None
    if reference is not None:
        offsets = np.concatenate([[0], np.cumsum([len(r.continuations) for r in requests])]).tolist()
        meter = KLMeter(reference, [int(v) for v in offsets])
    sink = recorder or meter
    scored = backend.score(requests, rows=sink, advance=progress)
    scores = []
    for index, (item, request, result) in enumerate(zip(task.items, requests, scored, strict=True)):
        token_kl = meter.item_kl(index, len(request.continuations)) if meter else None
        scores.append(
            ItemScore(
                task=task.name,
                item_id=item.item_id,
                subject=item.subject,
                target=item.answer,
                logprobs=result.logprobs,
                option_chars=tuple(len(c) for c in request.continuations),
                token_kl=token_kl,
            )
        )
    model: dict[str, Any] = {
        "label": backend.info.label,
        "tokenizer_fingerprint": backend.info.tokenizer_fingerprint,
        "vocab_size": backend.info.vocab_size,
        "details": backend.info.details,
    }
    if meter is not None and meter.mismatched:
        log.warning(
            "%s: %d items tokenised differently from the baseline; no token KL for them",
            task.name,
            len(meter.mismatched),
        )
    return PassResult(key, model, scores, recorder.result() if recorder else None)
