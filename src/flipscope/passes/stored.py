"""A scoring pass stored as it goes: the items are scored in chunks of ``CHUNK_ITEMS``, each chunk stored (as a
pass of its own, under ``<key>.part<i>``) the moment it is scored, so a killed run loses at most one chunk; a
restarted run loads the stored chunks and scores the rest. The chunks are merged into the pass (stored under
``key``, the chunks then deleted), equal to a pass scored in one go: a baseline's tail draws are seeded by the
request's index in the whole pass, and a candidate measures each chunk against the same slice of the baseline."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from flipscope.metrics.kl import concat_rows, pad_topk
from flipscope.models import Backend
from flipscope.passes.scoring import run_pass
from flipscope.store import PassResult, PassStore, ReferenceRows
from flipscope.tasks import ItemRequests, TaskData

#: Items scored and stored together.
CHUNK_ITEMS = 128


@dataclass(frozen=True)
class PassRows:
    """The token rows a scoring pass keeps or measures against, as ``run_pass`` takes them: ``topk`` set, the
    baseline's compact rows (with ``tail_samples``); ``reference`` set, a candidate's answer-token KL against the
    baseline's rows (``exact`` as in ``KLMeter``)."""

    topk: int | None
    tail_samples: int
    reference: ReferenceRows | None
    exact: bool


def run_stored_pass(
    store: PassStore,
    backend: Callable[[], Backend],
    task: TaskData,
    prompts: list[ItemRequests],
    *,
    key: str,
    rows: PassRows,
    progress: Callable[[int], None] | None,
    use_cache: bool = True,
) -> PassResult:
    parts: list[PassResult] = []
    for chunk in pass_chunks(key, prompts):
        part = store.load(chunk.key) if use_cache else None
        if part is None:
            part = chunk.run(backend(), task, prompts, rows, progress)
            part = store.save(part, replace=not use_cache)
        elif progress:
            progress(chunk.n_requests)
        parts.append(part)
    return finish_pass(store, key, parts, use_cache=use_cache)


@dataclass(frozen=True)
class Chunk:
    """Items ``lo``…``hi`` of a pass, stored under ``key``; ``first_request`` and ``first_option``: the requests
    and (item, option) pairs before it in the whole pass (the tail draws' seeds, the baseline's rows)."""

    key: str
    lo: int
    hi: int
    first_request: int
    first_option: int
    n_requests: int
    n_options: int

    def run(
        self,
        backend: Backend,
        task: TaskData,
        prompts: list[ItemRequests],
        rows: PassRows,
        progress: Callable[[int], None] | None,
    ) -> PassResult:
        """This chunk of the pass scored (the whole pass's ``task`` and ``prompts`` given)."""
        if isinstance(backend, RemoteChunks):  # the model runs elsewhere (a Ray actor): the chunk is scored there
            items = dataclasses.replace(task, items=task.items[self.lo : self.hi])
            part = backend.run_chunk(self, items, prompts[self.lo : self.hi], rows)
            if progress is not None:
                progress(self.n_requests)
            return part
        return run_pass(
            backend,
            dataclasses.replace(task, items=task.items[self.lo : self.hi]),
            prompts[self.lo : self.hi],
            key=self.key,
            topk=rows.topk,
            tail_samples=rows.tail_samples,
            reference=slice_reference(rows.reference, self.first_option, self.first_option + self.n_options),
            exact=rows.exact,
            progress=progress,
            first_request=self.first_request,
        )


@runtime_checkable
class RemoteChunks(Protocol):
    """A backend whose model runs elsewhere (``passes.ray_backend``): a chunk is scored where the model is, given
    its items and prompts only (the chunk's bounds name where they sit in the whole pass)."""

    def run_chunk(self, chunk: Chunk, task: TaskData, prompts: list[ItemRequests], rows: PassRows) -> PassResult: ...


def pass_chunks(key: str, prompts: list[ItemRequests]) -> list[Chunk]:
    """The chunks of the pass ``key`` over ``prompts`` (one per item), ``CHUNK_ITEMS`` items each."""
    bounds = [*range(0, max(len(prompts), 1), CHUNK_ITEMS), len(prompts)]  # no items: one empty chunk
    chunks: list[Chunk] = []
    requests_before = options_before = 0
    for c, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        n_requests = sum(len(p.requests) for p in prompts[lo:hi])
        n_options = sum(len(r.continuations) for p in prompts[lo:hi] for r in p.requests)
        chunks.append(Chunk(f"{key}.part{c:05d}", lo, hi, requests_before, options_before, n_requests, n_options))
        requests_before += n_requests
        options_before += n_options
    return chunks


def finish_pass(store: PassStore, key: str, parts: list[PassResult], *, use_cache: bool) -> PassResult:
    """The chunks merged into the pass, stored under ``key``; the chunks' own files then deleted."""
    result = store.save(merge_parts(key, parts), replace=not use_cache)
    for c in range(len(parts)):
        store.delete(f"{key}.part{c:05d}")
    return result


def slice_reference(reference: ReferenceRows | None, start: int, end: int) -> ReferenceRows | None:
    """The baseline rows of (item, option) pairs ``start``…``end`` of the pass (the rows themselves shared)."""
    if reference is None:
        return None
    return dataclasses.replace(reference, spans=reference.spans[start:end])


def merge_parts(key: str, parts: list[PassResult]) -> PassResult:
    model = dict(parts[0].model)
    unshared = [p.model["token_kl_unshared"] for p in parts if "token_kl_unshared" in p.model]
    if unshared:
        model["token_kl_unshared"] = [sum(u[0] for u in unshared), sum(u[1] for u in unshared)]
    references = [p.reference for p in parts if p.reference is not None]
    if references and len(references) != len(parts):
        raise ValueError("some chunks of a pass have baseline rows and some have none")
    scores = [s for p in parts for s in p.scores]
    return PassResult(key, model, scores, merge_references(references) if references else None)


def merge_references(parts: list[ReferenceRows]) -> ReferenceRows:
    """Chunks' rows in order; a server's named tokens ("topk") renumbered into one list of pieces."""
    kind = parts[0].kind
    pieces = parts[0].pieces
    rows = [p.rows for p in parts]
    if kind == "topk":
        names: dict[str, int] = {}
        rows = []
        for p in parts:
            mapping = np.array([names.setdefault(t, len(names)) for t in (p.pieces or [])] + [-1], dtype=np.int64)
            rows.append(
                dataclasses.replace(
                    p.rows,
                    ids=mapping[p.rows.ids].astype(p.rows.ids.dtype),
                    sample_ids=mapping[p.rows.sample_ids].astype(p.rows.sample_ids.dtype),
                )
            )
        width = max(r.ids.shape[1] for r in rows)
        rows = [pad_topk(r, width) for r in rows]
        pieces = list(names)
    offsets = np.cumsum([0] + [len(p.rows) for p in parts[:-1]])
    spans = np.concatenate([p.spans + off for p, off in zip(parts, offsets, strict=True)])
    return ReferenceRows(concat_rows(rows), spans, kind, pieces)
