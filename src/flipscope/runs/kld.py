"""``kld``: token-level distances between a baseline and candidates on a text corpus, with the baseline live, stored
as full rows (quantised: an int16 grid or float16), or stored compactly."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics.corpus_stats import CorpusSummary
from flipscope.models import LoadOptions, ModelSpec, fingerprint, parse_models
from flipscope.models.base import CorpusBackend
from flipscope.passes.kld import (
    DEFAULT_KLD_TAIL_SAMPLES,
    DEFAULT_KLD_TOPK,
    STORE_ALIASES,
    STORES,
    CorpusSetup,
    Plan,
    PositionParts,
    baseline_store,
    check_vocabulary,
    corpus_backend,
    parts_folder,
    score_candidate,
)
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.passes.ray_kld import kld_on_ray
from flipscope.plumbing.atomic import exclusive
from flipscope.plumbing.cache import cache_root
from flipscope.plumbing.version import library_versions
from flipscope.runs.overrides import with_overrides
from flipscope.store.baseline_rows import BaselineStore, llama_cpp_bytes_per_position
from flipscope.store.kld_parts import Columns
from flipscope.store.kld_run import (
    Divergent,
    KLDRunFile,
    KLDRunSettings,
    WindowStats,
    finite_positions,
    kl_kinds,
    summarize_positions,
    write_kld_run,
)
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out
from flipscope.tasks.corpus import load_corpus


@dataclass
class KLDResult:
    run: KLDRunFile
    out: Path
    positions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, CorpusSummary]:
        return self.run.summary


@dataclass(frozen=True, kw_only=True)
class KldSettings:
    """Everything a ``kld`` run is made with, the models and the display aside; shared by the CLI and the API. (What
    its run.json records of them is ``store.kld_run.KLDRunSettings``.)"""

    corpus: str | None = None  # a text file or folder of .txt files, hf:<dataset>[:<config>[:<split>]] (None: default)
    ctx: int = 512  # tokens per window (the first becomes BOS where the tokenizer adds one)
    scored_fraction: float = 0.5  # share of each window scored, from its end (llama.cpp: 0.5)
    max_windows: int | None = None  # use only the first N windows (None: all)
    store: str = "compact"  # how the baseline is held: compact, full (former name: exact) or live
    topk: int = DEFAULT_KLD_TOPK  # compact store: baseline log-probs kept per position
    tail_samples: int = DEFAULT_KLD_TAIL_SAMPLES  # compact store: tail tokens sampled per position (0: a lower bound)
    full_code: str = "int16"  # full store: int16 (a grid of 6.1e-4-nat steps 40 nats deep) or float16
    batch: int = 1  # windows per forward pass
    rows: int = 256  # scored positions per slice of log-probabilities (at most rows × vocabulary held at once)
    out: str | Path | None = None  # the run directory to write (None: runs/kld-<timestamp>)
    device: str = "auto"  # cpu, cuda, … (auto: cuda if present)
    dtype: str = "float32"
    use_cache: bool = True  # False: build the baseline store again even if a cached one exists
    cache_dir: str | Path | None = None  # where stores are cached (None: the flipscope cache's kld/)
    ray: RayPlacement | None = None  # build the store and measure the candidates on a Ray cluster


def kld(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    settings: KldSettings | None = None,
    *,
    display: Display | None = None,
    **fields: Any,
) -> KLDResult:
    """KL(B‖C), KL(C‖B), perplexities, Δp, top-token agreement of each candidate against the baseline on text.

    ``store``: ``live`` runs baseline and candidate in lockstep (exact, nothing kept); ``full`` keeps the baseline's
    full rows, quantised (``full_code`` int16: a grid of 6.1e-4-nat steps 40 nats deep, or float16; "exact" is
    its former name); ``compact`` keeps its top-``topk`` plus the remaining mass (a lower bound of KL;
    ``tail_samples`` > 0 adds an unbiased within-tail estimate). Stores are cached and reused. ``settings``
    of the run say what each number is (``kl_kinds``): the percentiles, maximum and most divergent positions are
    exact only live. ``fields``: settings by name (``ctx=256``), put in ``settings`` (default: ``KldSettings()``).
    """
    chosen = with_overrides(settings or KldSettings(), fields, command="kld", expected=KldSettings)
    return _kld(baseline, candidates, chosen, display=display, out=chosen.out)


@releases_out
def _kld(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    chosen: KldSettings,
    *,
    display: Display | None,
    out: str | Path | None,
) -> KLDResult:
    corpus, ctx, scored_fraction, max_windows = chosen.corpus, chosen.ctx, chosen.scored_fraction, chosen.max_windows
    store, topk, tail_samples, full_code = chosen.store, chosen.topk, chosen.tail_samples, chosen.full_code
    batch, rows, device, dtype = chosen.batch, chosen.rows, chosen.device, chosen.dtype
    use_cache, cache_dir = chosen.use_cache, chosen.cache_dir
    shown: Display = display or NullDisplay()
    store = STORE_ALIASES.get(store, store)
    if store not in STORES:
        raise FlipscopeError(f"unknown baseline store {store!r}", fix=f"use one of {', '.join(STORES)}")
    if topk < 1 or tail_samples < 0 or batch < 1 or rows < 1:
        raise FlipscopeError("--topk, --batch and --rows must be ≥ 1 and --tail-samples ≥ 0")
    if full_code not in ("float16", "int16"):
        raise FlipscopeError(f"unknown full-store code {full_code!r}", fix="use int16 or float16")
    check_out(out)
    text = load_corpus(corpus)  # a corpus error needs nothing fetched: before the models
    base_spec, cand_specs = parse_models(baseline, candidates)
    options = LoadOptions(device=device, dtype=dtype, context=ctx).resolved()
    setup = CorpusSetup(ctx, scored_fraction, max_windows, store, topk, tail_samples, full_code, batch, rows)
    base_fp = fingerprint(base_spec)
    folder = Path(cache_dir) if cache_dir else cache_root() / "kld"
    if chosen.ray is not None:
        if store == "live":
            raise FlipscopeError(
                "--ray cannot run --store live: it runs baseline and candidate side by side in one process",
                fix="use --store compact (the default) or full: the baseline's store is built on the cluster",
            )
        options = LoadOptions(device=chosen.ray.device(device), dtype=dtype, context=ctx)
        found = kld_on_ray(chosen.ray, base_spec, cand_specs, text, options, setup, folder=folder,
                           use_cache=use_cache, pick=_picked, display=shown)  # fmt: skip
        stored: BaselineStore | None = found.stored
        plan, positions = found.plan, found.columns
        divergent: dict[str, list[Divergent]] = {}
        entries: list[dict[str, Any]] = []
        for spec in cand_specs:
            label = spec.label()
            divergent[label] = _measured(label, positions[label], plan, found.texts[label])
            entries.append({"spec": label, "fingerprint": fingerprint(spec), "details": found.details[label]})
    else:
        stored, plan, positions, divergent, entries = _local(base_spec, cand_specs, text, options, setup, folder,
                                                             use_cache=use_cache, shown=shown)  # fmt: skip
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
        full_code=full_code,
    )


def _local(
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    text: Any,
    options: LoadOptions,
    setup: CorpusSetup,
    folder: Path,
    *,
    use_cache: bool,
    shown: Display,
) -> tuple[BaselineStore | None, Plan, dict[str, Columns], dict[str, list[Divergent]], list[dict[str, Any]]]:
    """The baseline's store and every candidate's columns, computed in this process."""
    base_backend: CorpusBackend | None = None
    try:
        stored, plan, key, base_backend = baseline_store(
            base_spec, text, options, setup, folder=folder, use_cache=use_cache, shown=shown
        )
        positions: dict[str, Columns] = {}
        divergent: dict[str, list[Divergent]] = {}
        entries = []
        for spec in cand_specs:
            label = spec.label()
            backend = corpus_backend(spec, options)
            try:
                info = backend.info
                check_vocabulary(label, info.tokenizer_fingerprint, info.vocab_size, stored, plan, text.sha256)
                where = parts_folder(folder, key, spec, setup)
                with exclusive(where), shown.progress(f"kld {label}", len(plan.windows)) as advance:
                    parts = PositionParts(where if use_cache else None)
                    positions[label] = score_candidate(
                        backend, base_backend, stored, plan, setup.batch, setup.rows, advance, parts
                    )
                texts = [backend.decode(ids) for ids in _picked(positions[label], plan)]
                divergent[label] = _measured(label, positions[label], plan, texts)
                entries.append({"spec": label, "fingerprint": fingerprint(spec), "details": info.details})
            finally:
                backend.close()
    finally:
        if base_backend is not None:
            base_backend.close()
    return stored, plan, positions, divergent, entries


def _measured(label: str, cols: Columns, plan: Plan, texts: list[str]) -> list[Divergent]:
    """A candidate's most divergent positions (``texts``: those ``_picked`` chose, decoded); refused where no
    position is finite."""
    if not finite_positions(cols)[0]["kl"].size:
        raise FlipscopeError(
            f"{label} gave NaN or infinite log-probabilities in every window: nothing to measure",
            fix="check its compression settings, or run in float32 (--dtype float32); the baseline "
            "and the candidates before it are kept in the cache",
        )
    return _divergent(finite_positions(cols)[0], plan, texts)


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


def _picked(cols: Columns, plan: Plan, count: int = 10) -> list[list[int]]:
    """The token lists the run shows of the most divergent finite positions: each one's context, then its token."""
    finite = finite_positions(cols)[0]
    out = []
    for i in np.argsort(-finite["kl"])[:count]:
        window, pos = plan.windows[int(finite["window"][i])], int(finite["position"][i])
        out += [list(window.ids[max(0, pos - 24) : pos + 1]), [int(finite["target"][i])]]
    return out


def _divergent(cols: Columns, plan: Plan, texts: list[str], count: int = 10) -> list[Divergent]:
    """``cols``: finite positions only; ``texts``: ``_picked``'s token lists of them, decoded."""
    out = []
    for n, i in enumerate(np.argsort(-cols["kl"])[:count]):
        out.append(
            Divergent(
                window=plan.windows[int(cols["window"][i])].index,
                position=int(cols["position"][i]),
                kl=float(cols["kl"][i]),
                context=texts[2 * n],
                token=texts[2 * n + 1],
            )
        )
    return out


def _finish(
    base_spec: ModelSpec,
    base_fp: str,
    entries: list[dict[str, Any]],
    positions: dict[str, dict[str, np.ndarray]],
    divergent: dict[str, list[Divergent]],
    plan: Plan,
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
    full_code: str,
) -> KLDResult:
    versions = library_versions()
    n_positions = sum(w.scored for w in plan.windows)
    settings = KLDRunSettings(
        corpus=text.source,
        corpus_sha256=text.sha256,
        corpus_tokens=len(plan.ids) if plan.ids else len(plan.windows) * ctx,
        ctx=ctx,
        scored_fraction=scored_fraction,
        windows=len(plan.windows),
        positions=n_positions,
        store=store,
        full_code=full_code if store == "full" else None,
        topk=topk if store == "compact" else None,
        tail_samples=tail_samples if store == "compact" else None,
        device=options.device,
        dtype=options.dtype,
        **kl_kinds(store, tail_samples, full_code),
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
        summary={label: summarize_positions(cols, label) for label, cols in positions.items()},
        per_window={label: _window_stats(finite_positions(cols)[0]) for label, cols in positions.items()},
        most_divergent=divergent,
        versions=versions,
        notes=_store_notes(store, tail_samples, full_code),
    )
    target = claim_run_dir(out, prefix="kld-")
    write_kld_run(target, run, positions)
    return KLDResult(run, target, positions)


#: What benchmarks/kld_stores.py measured of each store's statistics over positions against live (README, kld
#: section: the bundled model, 2,040 positions = 8 windows of 512, candidates +rtn:w8, +noise:0.002, +rtn:w4g64;
#: the worst of the three) and of its mean at the engines' noise floor (16 windows, gguf:smollm2-135m).
MEASURED_POSITIONS = {
    "estimate": "measured at top-64 + 64 samples on the bundled model with benchmarks/kld_stores.py: median within "
    "0.5% of live, p99 within 1.6%, p99.9 within 2.6%, max within 0.8%, 9 of the 10 most divergent positions the same",
    "int16": "measured on the bundled model with benchmarks/kld_stores.py: percentiles and max within 0.24% of live, "
    "the same 10 most divergent positions; the mean 1.2% high at the engines' noise floor (KL 6e-7)",
    "float16": "measured on the bundled model with benchmarks/kld_stores.py: percentiles and max within 1.1% of live; "
    "the mean 50% high at the engines' noise floor (KL 6e-7)",
}


def _store_notes(store: str, tail_samples: int, full_code: str) -> list[str]:
    """What each number of a run from this store is."""
    if store == "live":
        return []
    if store == "full":
        grid = "an int16 grid (6.1e-4-nat steps, 40 nats deep)" if full_code == "int16" else "float16"
        return [
            f"full store: the baseline's rows are kept on {grid}, not exactly: the mean KL, its percentiles, maximum "
            f"and most divergent positions carry that loss ({MEASURED_POSITIONS[full_code]})"
        ]
    if not tail_samples:
        return [
            "compact store without tail samples: KL(B‖C) and KL(C‖B) are over top-k ∪ {rest}, lower bounds; so "
            "is each position's KL, hence the percentiles, maximum and most divergent positions too (lower bounds "
            "of the true order statistics)"
        ]
    return [
        "compact store: KL(B‖C) is an unbiased estimate (top-k and rest exact, the tail from its samples); "
        "KL(C‖B) is over top-k ∪ {rest} only, a lower bound",
        "the KL percentiles, maximum, σ and most divergent positions are taken over per-position estimates: each "
        "position's tail term comes from its own samples, so their mean is unbiased but their spread and extremes "
        f"are not ({MEASURED_POSITIONS['estimate']}); --store live gives exact ones",
    ]
