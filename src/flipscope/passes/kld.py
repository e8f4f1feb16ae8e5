"""`kld`'s two passes: the baseline's store built (checkpointed, resumable) and a candidate measured against it
(its columns stored in stretches as they are computed), window batch by window batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec, load_backend
from flipscope.models.base import CorpusBackend, nonfinite_logits
from flipscope.plumbing.atomic import write_atomically
from flipscope.store.baseline_rows import BaselineStore, StoreHeader, save_npy
from flipscope.store.kld_parts import PositionParts
from flipscope.store.kld_run import POSITION_COLUMNS
from flipscope.tasks.corpus import Window, make_windows

#: Default compact store, chosen from benchmarks/kld_stores.py (README, kld section: 16 windows of 512 of the default
#: corpus, candidates +rtn:w8, the gguf: noise floor and +rtn:w4g64): top-64 + 64 tail samples is 1.05% of
#: llama.cpp's bytes per position with mean KL within 0.11% of live (the largest of the three errors); top-64
#: alone falls 16% short.
DEFAULT_KLD_TOPK = 64
DEFAULT_KLD_TAIL_SAMPLES = 64


@dataclass(frozen=True)
class CorpusSetup:
    """What a baseline store is made with (and keyed by, with the model, corpus, device and dtype)."""

    ctx: int = 512
    scored_fraction: float = 0.5
    max_windows: int | None = None
    store: str = "compact"
    topk: int = DEFAULT_KLD_TOPK
    tail_samples: int = DEFAULT_KLD_TAIL_SAMPLES
    full_code: str = "int16"
    batch: int = 1
    rows: int = 256


@dataclass(frozen=True)
class Plan:
    windows: list[Window]
    ids: list[int]
    tokenizer: str
    vocab_size: int


def corpus_backend(spec: ModelSpec, options: LoadOptions) -> CorpusBackend:
    backend: Any = load_backend(spec, options)
    rows = backend.info.capabilities.rows
    if rows != "full" or not hasattr(backend, "corpus_logprobs"):
        backend.close()
        given = "only its top-k log-probabilities" if rows == "topk" else "no per-token log-probabilities"
        raise FlipscopeError(
            f"{spec.label()}: flipscope kld needs full-vocabulary log-probabilities on text; it gives {given}",
            fix="run the model locally as an hf:, bundled: or gguf: spec (compare still measures top-k token KL)",
        )
    result: CorpusBackend = backend
    return result


def make_plan(backend: CorpusBackend, text: str, ctx: int, fraction: float, max_windows: int | None) -> Plan:
    ids, bos = backend.encode_corpus(text)
    windows = make_windows(ids, ctx, bos_id=bos, scored_fraction=fraction, max_windows=max_windows)
    return Plan(windows, ids, backend.info.tokenizer_fingerprint, backend.info.vocab_size)


def plan_from_store(stored: BaselineStore, ctx: int, fraction: float) -> Plan:
    data = np.load(stored.folder / "windows.npy")  # [W, ctx]
    first = int(stored.header.settings["first"])
    windows = [Window(i, tuple(int(t) for t in row), first) for i, row in enumerate(data)]
    return Plan(windows, [], stored.header.tokenizer_fingerprint, stored.header.vocab_size)


def _batches(windows: list[Window], batch: int) -> Iterator[list[Window]]:
    for start in range(0, len(windows), batch):
        yield windows[start : start + batch]


def build_store(
    backend: CorpusBackend,
    plan: Plan,
    folder: Path,
    kind: str,
    corpus_sha: str,
    settings: dict[str, Any],
    shown: Display,
    setup: CorpusSetup,
    *,
    label: str,
) -> BaselineStore:
    """The baseline's store of ``kind`` (``setup.store`` as on disk), built from ``setup``'s top-k, tail samples,
    full-store code, batch and rows."""
    import torch

    from flipscope.metrics.kl import compress

    header = StoreHeader(
        kind=kind,
        positions=sum(w.scored for w in plan.windows),
        vocab_size=plan.vocab_size,
        tokenizer_fingerprint=plan.tokenizer,
        corpus_sha256=corpus_sha,
        settings={**settings, "first": plan.windows[0].first, "baseline": label},
        code=setup.full_code if kind == "exact" else "float16",  # "exact": the full store's kind on disk
        topk=min(setup.topk, plan.vocab_size) if kind == "compact" else 0,
        tail_samples=setup.tail_samples if kind == "compact" and setup.topk < plan.vocab_size else 0,
    )
    generator = torch.Generator().manual_seed(0)
    store = BaselineStore.resume(folder, header)
    if store is None:
        store = BaselineStore.create(folder, header)
        ids = np.array([w.ids for w in plan.windows], dtype=np.int32)
        write_atomically(folder / "windows.npy", lambda tmp: save_npy(tmp, ids))
    state = store.rng_state()
    if state is not None:
        generator.set_state(torch.from_numpy(state))
    done, at = store.header.done_windows, store.header.done_positions
    shown_kind = "full" if kind == "exact" else kind
    with shown.progress(f"baseline {label} → {shown_kind} store", len(plan.windows)) as advance:
        advance(done)
        for group in _batches(plan.windows[done:], setup.batch):
            for logprobs, targets in backend.corpus_logprobs(group, rows=setup.rows):
                if not bool(torch.isfinite(logprobs.logsumexp(-1)).all()):
                    raise nonfinite_logits(f"{label} (the baseline)", f"window {group[0].index}+")
                logp = logprobs.gather(-1, targets[:, None])[:, 0]
                compact = (
                    compress(logprobs, setup.topk, setup.tail_samples, generator=generator)
                    if kind == "compact"
                    else None
                )
                store.write(at, logprobs, logp, compact)
                at += logprobs.shape[0]
            done += len(group)
            store.checkpoint(done, at, generator.get_state().numpy())  # a killed build resumes from here
            advance(len(group))
    store.finish()
    return store


#: Windows per stored stretch of a candidate's columns (a killed run recomputes at most this many).
PART_WINDOWS = 16


def score_candidate(
    cand: CorpusBackend,
    base: CorpusBackend | None,
    stored: BaselineStore | None,
    plan: Plan,
    batch: int,
    rows: int,
    advance: Any,
    parts: PositionParts,
) -> dict[str, np.ndarray]:
    """The candidate's per-position columns over every window, stored in stretches as they are computed
    (``parts``): windows already stored are read, not measured again."""
    from flipscope.metrics.corpus_kl import position_stats

    done, finished = parts.resume()
    advance(done)
    names = (*POSITION_COLUMNS, "window", "position", "target")
    pending: dict[str, list[np.ndarray]] = {c: [] for c in names}
    at = sum(w.scored for w in plan.windows[:done])
    start = done
    for group in _batches(plan.windows[done:], batch):
        base_iter = base.corpus_logprobs(group, rows=rows) if base is not None else None
        for logprobs, targets in cand.corpus_logprobs(group, rows=rows):
            n = logprobs.shape[0]
            if base_iter is not None:
                base_rows, _ = next(base_iter)
                stats = position_stats(base_rows, None, logprobs, targets, base_rows.gather(-1, targets[:, None])[:, 0])
            else:
                assert stored is not None
                rows_b, topk_b, logp_b = stored.read(at, at + n)
                stats = position_stats(rows_b, topk_b, logprobs, targets, logp_b)
            for name in POSITION_COLUMNS:
                pending[name].append(getattr(stats, name).numpy())
            pending["target"].append(targets.numpy())
            at += n
        per = group[0].scored
        for w in group:
            pending["window"].append(np.full(per, w.index, np.int32))
            pending["position"].append(np.arange(w.first, w.first + per, dtype=np.int32))
        done += len(group)
        if done - start >= PART_WINDOWS or done == len(plan.windows):
            stretch = {name: np.concatenate(chunks) for name, chunks in pending.items()}
            parts.save(start, done, stretch)
            finished.append(stretch)
            pending, start = {c: [] for c in names}, done
        advance(len(group))
    return {name: np.concatenate([part[name] for part in finished]) for name in names}
