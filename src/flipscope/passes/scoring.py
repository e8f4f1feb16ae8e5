"""One model over one task: score every item, and either record the baseline's answer-token distributions
(compact top-k form) or measure a candidate's answer-token KL against them as the rows stream by.

Where both sides give full-vocabulary rows over the same vocabulary, token KL is an *unbiased estimate*: the
baseline is stored as its top-k, the mass of the rest and tokens sampled from the rest, so the top-k and rest terms
are exact and the within-tail term comes from the samples (``metrics.kl``); a *lower bound* without tail samples;
exact only where the stored top-k holds the whole vocabulary. Where a side gives only a server's top-k it is *top-k
approximate* (``metrics.topk_kl``). ``TokenKL`` names which, in each pass and in run.json."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, Scoring
from flipscope.metrics.kl import CompactRows, compress, concat_rows, kl_compact, pad_topk
from flipscope.metrics.token_kl import TokenKL
from flipscope.metrics.topk_kl import compact_pieces, full_pieces, kl_shared, topk_compact, unique_pieces
from flipscope.models import Backend
from flipscope.models.base import TopKRows
from flipscope.store import PassResult, ReferenceRows
from flipscope.tasks import ItemRequests, ScoreRequest, TaskData

log = logging.getLogger(__name__)


class TopKRecorder:
    """Row sink of a baseline pass: keeps each answer token's top-k log-probs and tail mass."""

    def __init__(self, k: int, samples: int, pieces: list[str] | None, first_request: int = 0) -> None:
        self.first_request = first_request  # requests before this chunk of the pass: the tail draws' seeds are global
        self.k = k
        self.samples = samples
        self.pieces = pieces  # the backend's token texts by id (None behind a server)
        self.parts: dict[tuple[int, int], CompactRows] = {}
        self.named: dict[str, int] = {}  # a server's token texts, as they appear
        self.kind: Literal["full", "topk"] = "full"

    def __call__(self, request: int, option: int, rows: np.ndarray | TopKRows) -> None:
        if isinstance(rows, TopKRows):
            self.kind = "topk"
            self.parts[(request, option)] = topk_compact(rows.tokens, self.named)
            return
        # [T, V] → [T, k] head + [T, m] tail samples, seeded by position so any scoring order gives the same draws
        seed = _seed(self.first_request + request, option)
        self.parts[(request, option)] = compress(rows, self.k, self.samples, seed=seed)

    def result(self) -> ReferenceRows | None:
        """Rows laid out in (request, option) order, whatever order the backend scored them in."""
        if not self.parts:
            return None  # the backend gives no per-token distributions
        ordered = [self.parts[key] for key in sorted(self.parts)]
        if self.kind == "topk":  # pad every part to the widest k
            width = max(part.ids.shape[1] for part in ordered)
            ordered = [pad_topk(part, width) for part in ordered]
        lengths = np.array([len(part) for part in ordered], dtype=np.int64)
        ends = np.cumsum(lengths)
        pieces = list(self.named) if self.kind == "topk" else self.pieces
        return ReferenceRows(concat_rows(ordered), np.stack([ends - lengths, ends], axis=1), self.kind, pieces)


def _seed(request: int, option: int) -> int:
    """The tail draws' seed of one (request, option): the same whatever order the backend scores them in."""
    return request * 1024 + option


class KLMeter:
    """Row sink of a candidate pass: answer-token KL(baseline‖candidate) per option, against stored rows."""

    def __init__(
        self, reference: ReferenceRows, offsets: list[int], *, exact: bool, pieces: list[str] | None = None
    ) -> None:
        """``exact``: full rows over the baseline's own vocabulary, measured with ``kl_compact`` (an unbiased
        estimate, see ``TokenKL``); otherwise top-k approximate, matching tokens by text (``pieces``: the
        candidate's token texts by id, for its full rows)."""
        self.reference = reference
        self.offsets = offsets  # offsets[i] = index of request i's first (item, option) in the reference
        self.exact = exact
        self.table = unique_pieces(pieces) if pieces is not None else None
        self.base_table = unique_pieces(reference.pieces) if reference.pieces is not None and not exact else None
        self.per_item: dict[int, list[float]] = defaultdict(list)
        self.mismatched: set[int] = set()
        self.positions = 0  # top-k approximate: answer-token positions compared,
        self.unshared = 0  # and those where the two top-k lists share no token (left out, counted)

    def __call__(self, request: int, option: int, rows: np.ndarray | TopKRows) -> None:
        ref = self.reference.option(self.offsets[request] + option)
        if len(ref) != len(rows):
            self.mismatched.add(request)  # the options tokenised differently: no per-token comparison
            return
        if self.exact and not isinstance(rows, TopKRows):
            self.per_item[request].append(float(np.mean(kl_compact(ref, rows).forward)))
            return
        assert self.reference.pieces is not None
        base = compact_pieces(ref, self.reference.pieces, self.base_table)  # T mappings text → log p_B
        if isinstance(rows, TopKRows):
            cand: list[dict[str, float]] | tuple[Any, ...] = rows.tokens
        elif self.table is not None:
            cand = full_pieces(rows, base, self.table)
        else:
            self.mismatched.add(request)
            return
        values = [kl_shared(b, c) for b, c in zip(base, cand, strict=True)]
        scored = [v for v in values if v is not None]
        self.positions += len(values)
        self.unshared += len(values) - len(scored)
        if not scored:
            self.mismatched.add(request)  # no position shares a token: nothing to measure for this item
            return
        self.per_item[request].append(float(np.mean(scored)))

    def item_kl(self, request: int, n_options: int) -> float | None:
        values = self.per_item.get(request, [])
        if request in self.mismatched or len(values) != n_options:
            return None
        return float(np.mean(values))


def token_kl_kind(reference: ReferenceRows, *, exact: bool) -> TokenKL:
    """How token KL against ``reference`` is obtained (``exact`` as in ``KLMeter``: full rows, one vocabulary)."""
    if not exact:
        return TokenKL.TOPK_APPROXIMATE
    if reference.rows.samples:
        return TokenKL.ESTIMATE
    if np.isneginf(reference.rows.rest).all():  # nothing outside the stored top-k
        return TokenKL.EXACT
    return TokenKL.LOWER_BOUND


def check_backend(backend: Backend, requests: list[ScoreRequest], *, scoring: Scoring = Scoring.ARGMAX) -> None:
    """What the task needs from the backend, checked before anything runs: option scoring, greedy flags where the
    task is scored by greedy match, and room for the longest prompt + option in the model's context."""
    caps, label = backend.info.capabilities, backend.info.label
    if not caps.multiple_choice:
        raise FlipscopeError(f"{label} cannot score multiple-choice options: {caps.note}", fix=caps.fix or None)
    if scoring == Scoring.GREEDY and not caps.greedy:
        raise FlipscopeError(
            f"{label} cannot tell whether a continuation is its greedy decoding (it gives no argmax over the "
            "vocabulary at each continuation token), and this task's accuracy is greedy match (lm-eval's is_greedy)",
            fix="run this task with an hf:, bundled: or gguf: model",
        )
    if caps.max_context is None or not requests:
        return
    texts = [r.prefix + r.prompt + max(r.continuations, key=len) for r in requests]
    longest = max(texts, key=len)
    n = backend.count_tokens(longest)
    if n is not None and n > caps.max_context:
        raise FlipscopeError(
            f"{label}: the longest prompt + option is {n} tokens, over the model's {caps.max_context}-token context",
            fix="use fewer few-shot examples (--fewshot), or a model with a longer context",
        )


def run_pass(
    backend: Backend,
    task: TaskData,
    prompts: list[ItemRequests],
    *,
    key: str,
    topk: int | None,
    tail_samples: int = 0,
    reference: ReferenceRows | None,
    exact: bool = True,
    progress: Callable[[int], None] | None,
    first_request: int = 0,
) -> PassResult:
    """Score the requests of ``prompts`` (one entry per ``task.items``). ``topk`` set: record compact rows (a
    baseline). ``reference`` set: measure answer-token KL against it (a candidate; ``exact`` as in ``KLMeter``).
    An item scored through one request per option (Winogrande) gets each request's one option score."""
    requests = [r for p in prompts for r in p.requests]
    scoring = Scoring(task.scoring)
    check_backend(backend, requests, scoring=scoring)
    rows_kind = backend.info.capabilities.rows
    pieces = backend.vocabulary_pieces() if rows_kind == "full" and (topk or not exact) else None
    recorder = TopKRecorder(topk, tail_samples, pieces, first_request) if topk and rows_kind else None
    meter = None
    if reference is not None and rows_kind:
        offsets = np.concatenate([[0], np.cumsum([len(r.continuations) for r in requests])]).tolist()
        meter = KLMeter(reference, [int(v) for v in offsets], exact=exact, pieces=pieces)
    sink = recorder or meter
    scored = backend.score(requests, rows=sink, advance=progress)
    scores, at = [], 0
    for item, prompt in zip(task.items, prompts, strict=True):
        mine = range(at, at + len(prompt.requests))
        at += len(prompt.requests)
        logprobs = tuple(v for i in mine for v in scored[i].logprobs)
        tokens = tuple(v for i in mine for v in scored[i].n_tokens)
        flags = [scored[i].greedy for i in mine]
        greedy = None if any(f is None for f in flags) else tuple(v for f in flags if f is not None for v in f)
        if greedy is None and scoring == Scoring.GREEDY:
            raise FlipscopeError(f"{backend.info.label} gave no greedy flags on {task.name}/{item.item_id}")
        token_kl = None
        if meter:
            kls = [meter.item_kl(i, len(requests[i].continuations)) for i in mine]
            token_kl = None if any(k is None for k in kls) else float(np.mean([k for k in kls if k is not None]))
        scores.append(
            ItemScore(
                task=task.name,
                item_id=item.item_id,
                subject=item.subject,
                target=item.answer,
                logprobs=logprobs,
                option_chars=prompt.option_chars,
                token_kl=token_kl,
                option_tokens=tokens,
                greedy=greedy,
                scoring=scoring,
            )
        )
    model: dict[str, Any] = {
        "label": backend.info.label,
        "tokenizer_fingerprint": backend.info.tokenizer_fingerprint,
        "vocab_size": backend.info.vocab_size,
        "details": backend.info.details,
        "token_kl": None if meter is None or reference is None else token_kl_kind(reference, exact=exact).value,
    }
    if meter is not None and not exact:
        model["token_kl_unshared"] = [meter.unshared, meter.positions]
    if meter is not None and meter.mismatched:
        log.warning(
            "%s: %d items tokenised differently from the baseline; no token KL for them",
            task.name,
            len(meter.mismatched),
        )
    return PassResult(key, model, scores, recorder.result() if recorder else None)
