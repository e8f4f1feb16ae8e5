"""``kld``: token-level distances between a baseline and candidates on a text corpus, with the baseline live,
stored exactly, or stored compactly."""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipscope._atomic import exclusive
from flipscope._cache import cache_root, content_hash
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics.corpus_stats import CorpusSummary, summarize_corpus
from flipscope.models import LoadOptions, ModelSpec, fingerprint, load_backend, parse_models
from flipscope.models._base import CorpusBackend
from flipscope.store.baseline_rows import BaselineStore, StoreHeader, llama_cpp_bytes_per_position
from flipscope.store.kld_run import (
    POSITION_COLUMNS,
    Divergent,
    KLDRunFile,
    KLDSettings,
    WindowStats,
    kl_kinds,
    write_kld_run,
)
from flipscope.store.run_dir import check_out, claim_run_dir
from flipscope.tasks.corpus import Window, load_corpus, make_windows

log = logging.getLogger(__name__)

STORES = ("compact", "exact", "live")
#: Default compact store, chosen from benchmarks/kld_stores.py (README, kld section): top-64 + 64 tail samples is
#: 1.05% of llama.cpp's bytes per position with mean KL within 0.3% of live; top-64 alone falls 16% short.
DEFAULT_KLD_TOPK = 64
DEFAULT_KLD_TAIL_SAMPLES = 64
#: Bumped whenever what a stored baseline holds changes.
STORE_VERSION = 2


@dataclass
class KLDResult:
    run: KLDRunFile
    out: Path
    positions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, CorpusSummary]:
        return self.run.summary


@dataclass(frozen=True)
class _Plan:
    windows: list[Window]
    ids: list[int]
    tokenizer: str
    vocab_size: int


def kld(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    *,
    corpus: str | None = None,
    ctx: int = 512,
    scored_fraction: float = 0.5,
    max_windows: int | None = None,
    store: str = "compact",
    topk: int = DEFAULT_KLD_TOPK,
    tail_samples: int = DEFAULT_KLD_TAIL_SAMPLES,
    exact_code: str = "int16",
    batch: int = 1,
    rows: int = 256,
    out: str | Path | None = None,
    device: str = "auto",
    dtype: str = "float32",
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    display: Display | None = None,
) -> KLDResult:
    """KL(B‖C), KL(C‖B), perplexities, Δp, top-token agreement of each candidate against the baseline on text.

    ``store``: ``live`` runs baseline and candidate in lockstep (exact, nothing kept); ``exact`` keeps the baseline's
    full rows (``exact_code`` float16 or int16); ``compact`` keeps its top-``topk`` plus the remaining mass (a lower
    bound of KL; ``tail_samples`` > 0 adds an unbiased within-tail estimate). Stores are cached and reused.
    """
    shown: Display = display or NullDisplay()
    if store not in STORES:
        raise FlipscopeError(f"unknown baseline store {store!r}", fix=f"use one of {', '.join(STORES)}")
    if topk < 1 or tail_samples < 0 or batch < 1 or rows < 1:
        raise FlipscopeError("--topk, --batch and --rows must be ≥ 1 and --tail-samples ≥ 0")
    if exact_code not in ("float16", "int16"):
        raise FlipscopeError(f"unknown exact-store code {exact_code!r}", fix="use float16 or int16")
    check_out(out)
    text = load_corpus(corpus)  # a corpus error needs nothing fetched: before the models
    base_spec, cand_specs = parse_models(baseline, candidates)
    options = LoadOptions(device=device, dtype=dtype).resolved()
    settings_key = {"ctx": ctx, "fraction": scored_fraction, "max_windows": max_windows, "dtype": dtype,
                    "device": options.device}  # fmt: skip
    base_fp = fingerprint(base_spec)
    store_kind = {"compact": ["compact", topk, tail_samples], "exact": ["exact", exact_code], "live": None}[store]
    key = content_hash(
        {"v": STORE_VERSION, "model": base_fp, "corpus": text.sha256, **settings_key, "store": store_kind}
    )
    folder = Path(cache_dir) if cache_dir else cache_root() / "kld"
    stored = BaselineStore.open(folder / key) if store != "live" and use_cache else None
    base_backend: CorpusBackend | None = None
    try:
        if stored is None:
            base_backend = _corpus_backend(base_spec, options)
            plan = _plan(base_backend, text.text, ctx, scored_fraction, max_windows)
            if store != "live":
                with exclusive(folder / key):  # one process builds it; another waits, then finds it
                    stored = BaselineStore.open(folder / key) if use_cache else None
                    if not use_cache:
                        shutil.rmtree(folder / key, ignore_errors=True)  # no resuming either
                    stored = stored or _build_store(
                        base_backend,
                        plan,
                        folder / key,
                        store,
                        text.sha256,
                        settings_key,
                        shown,
                        topk=topk,
                        tail_samples=tail_samples,
                        exact_code=exact_code,
                        batch=batch,
                        rows=rows,
                        label=base_spec.label(),
                    )
                base_backend.close()
                base_backend = None
        else:
            plan = _plan_from_store(stored, ctx, scored_fraction)
        positions: dict[str, dict[str, np.ndarray]] = {}
        divergent: dict[str, list[Divergent]] = {}
        entries = []
        for spec in cand_specs:
            backend = _corpus_backend(spec, options)
            try:
                if stored is not None:
                    stored.check_matches(tokenizer_fingerprint=backend.info.tokenizer_fingerprint,
                                         vocab_size=backend.info.vocab_size, corpus_sha256=text.sha256,
                                         label=spec.label())  # fmt: skip
                elif (backend.info.tokenizer_fingerprint, backend.info.vocab_size) != (plan.tokenizer, plan.vocab_size):
                    raise FlipscopeError(
                        f"{spec.label()} has a different tokenizer or vocabulary than the baseline; token-level KL "
                        "compares distributions over the same vocabulary",
                        fix="compare models that share the baseline's tokenizer",
                    )
                with shown.progress(f"kld {spec.label()}", len(plan.windows)) as advance:
                    positions[spec.label()] = _score(backend, base_backend, stored, plan, batch, rows, advance)
                divergent[spec.label()] = _divergent(positions[spec.label()], plan, backend.decode)
                entries.append(
                    {"spec": spec.label(), "fingerprint": fingerprint(spec), "details": backend.info.details}
                )
            finally:
                backend.close()
    finally:
        if base_backend is not None:
            base_backend.close()
    return _finish(
        base_spec,
        base_fp,
        entries,
        positions,
        divergent,
        plan,
        text,
        stored,
        store,
        options,
        out,
        ctx=ctx,
        scored_fraction=scored_fraction,
        topk=topk,
        tail_samples=tail_samples,
        exact_code=exact_code,
    )


def _corpus_backend(spec: ModelSpec, options: LoadOptions) -> CorpusBackend:
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


def _plan(backend: CorpusBackend, text: str, ctx: int, fraction: float, max_windows: int | None) -> _Plan:
    ids, bos = backend.encode_corpus(text)
    windows = make_windows(ids, ctx, bos_id=bos, scored_fraction=fraction, max_windows=max_windows)
    return _Plan(windows, ids, backend.info.tokenizer_fingerprint, backend.info.vocab_size)


def _plan_from_store(stored: BaselineStore, ctx: int, fraction: float) -> _Plan:
    data = np.load(stored.folder / "windows.npy")  # [W, ctx]
    first = int(stored.header.settings["first"])
    windows = [Window(i, tuple(int(t) for t in row), first) for i, row in enumerate(data)]
    return _Plan(windows, [], stored.header.tokenizer_fingerprint, stored.header.vocab_size)


def _batches(windows: list[Window], batch: int) -> Iterator[list[Window]]:
    for start in range(0, len(windows), batch):
        yield windows[start : start + batch]


def _build_store(
    backend: CorpusBackend,
    plan: _Plan,
    folder: Path,
    kind: str,
    corpus_sha: str,
    settings: dict[str, Any],
    shown: Display,
    *,
    topk: int,
    tail_samples: int,
    exact_code: str,
    batch: int,
    rows: int,
    label: str,
) -> BaselineStore:
    import torch

    from flipscope.metrics.kl import compress

    header = StoreHeader(
        kind=kind,
        positions=sum(w.scored for w in plan.windows),
        vocab_size=plan.vocab_size,
        tokenizer_fingerprint=plan.tokenizer,
        corpus_sha256=corpus_sha,
        settings={**settings, "first": plan.windows[0].first, "baseline": label},
        code=exact_code if kind == "exact" else "float16",
        topk=min(topk, plan.vocab_size) if kind == "compact" else 0,
        tail_samples=tail_samples if kind == "compact" and topk < plan.vocab_size else 0,
    )
    generator = torch.Generator().manual_seed(0)
    store = BaselineStore.resume(folder, header)
    if store is None:
        store = BaselineStore.create(folder, header)
        np.save(folder / "windows.npy", np.array([w.ids for w in plan.windows], dtype=np.int32))
    state = store.rng_state()
    if state is not None:
        generator.set_state(torch.from_numpy(state))
    done, at = store.header.done_windows, store.header.done_positions
    with shown.progress(f"baseline {label} → {kind} store", len(plan.windows)) as advance:
        advance(done)
        for group in _batches(plan.windows[done:], batch):
            for logprobs, targets in backend.corpus_logprobs(group, rows=rows):
                logp = logprobs.gather(-1, targets[:, None])[:, 0]
                compact = compress(logprobs, topk, tail_samples, generator=generator) if kind == "compact" else None
                store.write(at, logprobs, logp, compact)
                at += logprobs.shape[0]
            done += len(group)
            store.checkpoint(done, at, generator.get_state().numpy())  # a killed build resumes from here
            advance(len(group))
    store.finish()
    return store


def _score(
    cand: CorpusBackend,
    base: CorpusBackend | None,
    stored: BaselineStore | None,
    plan: _Plan,
    batch: int,
    rows: int,
    advance: Any,
) -> dict[str, np.ndarray]:
    from flipscope.metrics.corpus_kl import position_stats

    parts: dict[str, list[np.ndarray]] = {c: [] for c in (*POSITION_COLUMNS, "window", "position", "target")}
    at = 0
    for group in _batches(plan.windows, batch):
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
                parts[name].append(getattr(stats, name).numpy())
            parts["target"].append(targets.numpy())
            at += n
        per = group[0].scored
        for w in group:
            parts["window"].append(np.full(per, w.index, np.int32))
            parts["position"].append(np.arange(w.first, w.first + per, dtype=np.int32))
        advance(len(group))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _window_stats(cols: dict[str, np.ndarray]) -> list[WindowStats]:
    out = []
    for w in np.unique(cols["window"]):
        sel = cols["window"] == w
        out.append(
            WindowStats(
                window=int(w),
                n=int(sel.sum()),
                ppl_base=math.exp(-float(cols["logp_base"][sel].mean())),
                ppl_cand=math.exp(-float(cols["logp_cand"][sel].mean())),
                kl_mean=float(cols["kl"][sel].mean()),
                same_top=float((cols["agree"][sel] >= 1).mean()),
            )
        )
    return out


def _divergent(cols: dict[str, np.ndarray], plan: _Plan, decode: Any, count: int = 10) -> list[Divergent]:
    order = np.argsort(-cols["kl"])[:count]
    out = []
    for i in order:
        window = plan.windows[int(cols["window"][i])]
        pos = int(cols["position"][i])
        out.append(
            Divergent(
                window=window.index,
                position=pos,
                kl=float(cols["kl"][i]),
                context=decode(list(window.ids[max(0, pos - 24) : pos + 1])) if decode else "",
                token=decode([int(cols["target"][i])]) if decode else str(int(cols["target"][i])),
            )
        )
    return out


def _finish(
    base_spec: ModelSpec,
    base_fp: str,
    entries: list[dict[str, Any]],
    positions: dict[str, dict[str, np.ndarray]],
    divergent: dict[str, list[Divergent]],
    plan: _Plan,
    text: Any,
    stored: BaselineStore | None,
    store: str,
    options: LoadOptions,
    out: str | Path | None,
    *,
    ctx: int,
    scored_fraction: float,
    topk: int,
    tail_samples: int,
    exact_code: str,
) -> KLDResult:
    from flipscope._compare import library_versions

    versions = library_versions()
    n_positions = sum(w.scored for w in plan.windows)
    settings = KLDSettings(
        corpus=text.source,
        corpus_sha256=text.sha256,
        corpus_tokens=len(plan.ids) if plan.ids else len(plan.windows) * ctx,
        ctx=ctx,
        scored_fraction=scored_fraction,
        windows=len(plan.windows),
        positions=n_positions,
        store=store,
        exact_code=exact_code if store == "exact" else None,
        topk=topk if store == "compact" else None,
        tail_samples=tail_samples if store == "compact" else None,
        device=options.device,
        dtype=options.dtype,
        **dict(zip(("kl_forward", "kl_reverse"), kl_kinds(store, tail_samples), strict=True)),
    )
    store_info: dict[str, Any] = {
        "kind": store,
        "llama_cpp_bytes_per_position": llama_cpp_bytes_per_position(plan.vocab_size),
    }
    if stored is not None:
        store_info |= {"folder": str(stored.folder), "bytes_per_position": stored.header.bytes_per_position()}
    run = KLDRunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=versions.get("flipscope", "unknown"),
        settings=settings,
        baseline={"spec": base_spec.label(), "fingerprint": base_fp, "tokenizer": plan.tokenizer},
        candidates=entries,
        store=store_info,
        summary={
            label: summarize_corpus(**{c: cols[c] for c in POSITION_COLUMNS}) for label, cols in positions.items()
        },
        per_window={label: _window_stats(cols) for label, cols in positions.items()},
        most_divergent=divergent,
        versions=versions,
        notes=_store_notes(store, tail_samples),
    )
    target = claim_run_dir(out, prefix="kld-")
    write_kld_run(target, run, positions)
    return KLDResult(run, target, positions)


def _store_notes(store: str, tail_samples: int) -> list[str]:
    if store != "compact":
        return []
    if not tail_samples:
        return ["compact store without tail samples: KL(B‖C) and KL(C‖B) are over top-k ∪ {rest}, lower bounds"]
    return [
        "compact store: KL(B‖C) is an unbiased estimate (top-k and rest exact, the tail from its samples); "
        "KL(C‖B) is over top-k ∪ {rest} only, a lower bound"
    ]
