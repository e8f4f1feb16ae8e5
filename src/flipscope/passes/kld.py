"""`kld`'s two passes: the baseline's store built (checkpointed, resumable) and a candidate measured against it
(its columns stored in stretches as they are computed), window batch by window batch."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec, fingerprint, load_backend
from flipscope.models.base import CorpusBackend, nonfinite_logits
from flipscope.plumbing.atomic import exclusive, write_atomically
from flipscope.plumbing.cache import content_hash
from flipscope.store.baseline_rows import BaselineStore, StoredSlice, StoreHeader, encode_rows, save_npy
from flipscope.store.kld_parts import PositionParts
from flipscope.store.kld_run import POSITION_COLUMNS
from flipscope.tasks.corpus import Window, make_windows

#: Default compact store, chosen from benchmarks/kld_stores.py (README, kld section: 16 windows of 512 of the default
#: corpus, candidates +rtn:w8, the gguf: noise floor and +rtn:w4g64): top-64 + 64 tail samples is 1.05% of
#: llama.cpp's bytes per position with mean KL within 0.11% of live (the largest of the three errors); top-64
#: alone falls 16% short.
DEFAULT_KLD_TOPK = 64
DEFAULT_KLD_TAIL_SAMPLES = 64

STORES = ("compact", "full", "live")
#: Former names of stores: the full store was called "exact", though its rows are quantised.
STORE_ALIASES = {"exact": "full"}
#: The full store's kind in its header and cache key: its former name, so stores already built are found.
FULL_ON_DISK = "exact"
#: Bumped whenever what a stored baseline holds changes.
STORE_VERSION = 2


@dataclass(frozen=True)
class CorpusSetup:
    """What a baseline store is made with; ``baseline_store`` builds the store's cache key from it (with the model,
    corpus, device and dtype; ``batch`` and ``rows`` aside)."""

    ctx: int = 512
    scored_fraction: float = 0.5
    max_windows: int | None = None
    store: str = "compact"
    topk: int = DEFAULT_KLD_TOPK
    tail_samples: int = DEFAULT_KLD_TAIL_SAMPLES
    full_code: str = "int16"
    batch: int = 1
    rows: int = 256

    @property
    def kind_on_disk(self) -> str:
        """The store's kind in its header and key ("exact" for ``full``, its former name)."""
        return FULL_ON_DISK if self.store == "full" else self.store


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
    header = store_header(plan, kind, corpus_sha, settings, setup, label=label)
    store = open_store(folder, header, plan)
    generator = tail_generator(store.rng_state())
    done, at = store.header.done_windows, store.header.done_positions
    shown_kind = "full" if kind == FULL_ON_DISK else kind
    with shown.progress(f"baseline {label} → {shown_kind} store", len(plan.windows)) as advance:
        advance(done)
        for group in _batches(plan.windows[done:], setup.batch):
            for arrays in store_rows(backend, group, setup, header, generator, label=label):
                store.put(at, arrays)
                at += len(arrays["logp"])
            done += len(group)
            store.checkpoint(done, at, generator.get_state().numpy())  # a killed build resumes from here
            advance(len(group))
    store.finish()
    return store


def store_header(plan: Plan, kind: str, corpus_sha: str, settings: dict[str, Any], setup: CorpusSetup,
                 *, label: str) -> StoreHeader:  # fmt: skip
    """The header of the baseline's store of ``kind`` (as on disk) over ``plan``'s windows."""
    return StoreHeader(
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


def open_store(folder: Path, header: StoreHeader, plan: Plan) -> BaselineStore:
    """The store ``header`` describes, resumed from its last checkpoint where one was left, else begun."""
    store = BaselineStore.resume(folder, header)
    if store is None:
        store = BaselineStore.create(folder, header)
        ids = np.array([w.ids for w in plan.windows], dtype=np.int32)
        write_atomically(folder / "windows.npy", lambda tmp: save_npy(tmp, ids))
    return store


def tail_generator(state: np.ndarray | None) -> Any:
    """The generator the tail samples are drawn from: seeded 0 at the first window, or at a checkpoint's state."""
    import torch

    generator = torch.Generator().manual_seed(0)
    if state is not None:
        generator.set_state(torch.from_numpy(state))
    return generator


def store_rows(
    backend: CorpusBackend, windows: list[Window], setup: CorpusSetup, header: StoreHeader, generator: Any,
    *, label: str
) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    """The arrays the store keeps for ``windows``' positions (in slices of ``setup.rows``, ``setup.batch`` windows
    per forward), the tail samples drawn from ``generator`` (carried from window to window)."""
    import torch

    from flipscope.metrics.kl import compress

    for group in _batches(windows, setup.batch):
        for logprobs, targets in backend.corpus_logprobs(group, rows=setup.rows):
            if not bool(torch.isfinite(logprobs.logsumexp(-1)).all()):
                raise nonfinite_logits(f"{label} (the baseline)", f"window {group[0].index}+")
            logp = logprobs.gather(-1, targets[:, None])[:, 0]
            compact = (
                compress(logprobs, setup.topk, setup.tail_samples, generator=generator)
                if header.kind == "compact"
                else None
            )
            yield encode_rows(header, logprobs, logp, compact)


def store_key(base_spec: ModelSpec, text: Any, options: LoadOptions, setup: CorpusSetup) -> tuple[str, dict[str, Any]]:
    """The key the baseline's store on ``text`` is cached under, and the settings its header records."""
    settings_key = {"ctx": setup.ctx, "fraction": setup.scored_fraction, "max_windows": setup.max_windows,
                    "dtype": options.dtype, "device": options.device}  # fmt: skip
    store_kind = {"compact": ["compact", setup.topk, setup.tail_samples], "full": [FULL_ON_DISK, setup.full_code],
                  "live": None}[setup.store]  # fmt: skip
    key = content_hash(
        {"v": STORE_VERSION, "model": fingerprint(base_spec), "corpus": text.sha256, **settings_key,
         "store": store_kind}
    )  # fmt: skip
    return key, settings_key


def baseline_store(
    base_spec: ModelSpec,
    text: Any,
    options: LoadOptions,
    setup: CorpusSetup,
    *,
    folder: Path,
    use_cache: bool,
    shown: Display,
) -> tuple[BaselineStore | None, Plan, str, CorpusBackend | None]:
    """The baseline's stored rows on ``text`` (built, resumed or found in the cache), its windows, the store's key,
    and — for ``live``, where nothing is stored — the baseline's backend, left open for the caller to close."""
    key, settings_key = store_key(base_spec, text, options, setup)
    stored = BaselineStore.open(folder / key) if setup.store != "live" and use_cache else None
    if stored is not None:
        return stored, plan_from_store(stored, setup.ctx, setup.scored_fraction), key, None
    base_backend = corpus_backend(base_spec, options)
    try:
        plan = make_plan(base_backend, text.text, setup.ctx, setup.scored_fraction, setup.max_windows)
        if setup.store == "live":
            return None, plan, key, base_backend
        with exclusive(folder / key):  # one process builds it; another waits, then finds it
            stored = BaselineStore.open(folder / key) if use_cache else None
            if not use_cache:
                shutil.rmtree(folder / key, ignore_errors=True)  # no resuming either
            stored = stored or build_store(
                base_backend, plan, folder / key, setup.kind_on_disk,
                text.sha256, settings_key, shown, setup, label=base_spec.label(),
            )  # fmt: skip
    except BaseException:
        base_backend.close()
        raise
    base_backend.close()
    return stored, plan, key, None


def check_vocabulary(
    label: str, tokenizer: str, vocab_size: int, stored: BaselineStore | None, plan: Plan, corpus_sha: str
) -> None:
    """A candidate of this tokenizer and vocabulary can be measured against the baseline (stored, or live)."""
    if stored is not None:
        stored.check_matches(tokenizer_fingerprint=tokenizer, vocab_size=vocab_size, corpus_sha256=corpus_sha,
                             label=label)  # fmt: skip
    elif (tokenizer, vocab_size) != (plan.tokenizer, plan.vocab_size):
        raise FlipscopeError(
            f"{label} has a different tokenizer or vocabulary than the baseline; token-level KL compares "
            "distributions over the same vocabulary",
            fix="compare models that share the baseline's tokenizer",
        )


def parts_folder(folder: Path, key: str, spec: ModelSpec, setup: CorpusSetup) -> Path:
    """Where a candidate's columns against the store ``key`` are kept, stretch by stretch."""
    wanted = {"store": key, "candidate": fingerprint(spec), "batch": setup.batch, "rows": setup.rows}
    return folder / "candidates" / content_hash(wanted)


#: Windows per stored stretch of a candidate's columns (a killed run recomputes at most this many).
PART_WINDOWS = 16


def score_candidate(
    cand: CorpusBackend,
    base: CorpusBackend | None,
    stored: BaselineStore | StoredSlice | None,
    plan: Plan,
    batch: int,
    rows: int,
    advance: Any,
    parts: PositionParts,
) -> dict[str, np.ndarray]:
    """The candidate's per-position columns over every window, stored in stretches as they are computed
    (``parts``): windows already stored are read, not measured again."""
    done, finished = parts.resume()
    advance(done)
    size = stretch_windows(batch)
    for start in range(done, len(plan.windows), size):
        group = plan.windows[start : start + size]
        cols = measure_windows(cand, base, stored, group, first_position(plan, start), batch, rows, advance)
        parts.save(start, start + len(group), cols)
        finished.append(cols)
    return join_columns(finished)


def stretch_windows(batch: int, most: int | None = None) -> int:
    """Windows per stored stretch: ``most`` (default ``PART_WINDOWS``) rounded up to a whole number of batches."""
    return -(-(most or PART_WINDOWS) // batch) * batch


def first_position(plan: Plan, window: int) -> int:
    """The store's number of the first scored position of window ``window``."""
    return sum(w.scored for w in plan.windows[:window])


def join_columns(stretches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = (*POSITION_COLUMNS, "window", "position", "target")
    return {name: np.concatenate([part[name] for part in stretches]) for name in names}


def measure_windows(
    cand: CorpusBackend,
    base: CorpusBackend | None,
    stored: BaselineStore | StoredSlice | None,
    windows: list[Window],
    at: int,
    batch: int,
    rows: int,
    advance: Any = None,
) -> dict[str, np.ndarray]:
    """The candidate's columns over ``windows`` (their scored positions start at ``at`` in the store), against
    the stored baseline or, live, ``base``; ``batch`` windows per forward."""
    from flipscope.metrics.corpus_kl import position_stats

    names = (*POSITION_COLUMNS, "window", "position", "target")
    pending: dict[str, list[np.ndarray]] = {c: [] for c in names}
    for group in _batches(windows, batch):
        base_iter = base.corpus_logprobs(group, rows=rows) if base is not None else None
        for logprobs, targets in cand.corpus_logprobs(group, rows=rows, normalized=False):  # logits
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
        if advance is not None:
            advance(len(group))
    return {name: np.concatenate(chunks) for name, chunks in pending.items()}
