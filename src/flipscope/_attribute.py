"""``flipscope attribute``: which units of a candidate's compression its corpus KL and flips come from, measured by
ablation against the cached baseline (weights swapped in memory between ablations)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipscope.attribution.ablate import CorpusMeter, WeightBank, capture_compression, correctness
from flipscope.attribution.run import AttributionRun, TaskFlips, UnitResult, write_attribution
from flipscope.attribution.units import Unit, UnitKind, make_units
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec, load_backend, parse_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AblationSettings:
    """Shared by `attribute` and `advise` (CLI and API): the corpus KL's windows and the model's placement."""

    corpus: str | None = None
    chunks: int = 8  # windows of ``ctx`` tokens
    ctx: int = 512
    scored_fraction: float = 0.5  # share of each window scored, from its end (as kld)
    device: str = "auto"
    dtype: str = "float32"
    batch: int = 1
    cache_dir: str | None = None  # where kld's baseline stores live (default: the flipscope cache)


@dataclass(frozen=True)
class AttributeSettings:
    by: UnitKind = UnitKind.BLOCK
    span: int | None = None  # with by=module: consecutive blocks per unit (None: all blocks)
    tasks: tuple[str, ...] = ()
    limit: int | None = 200
    format: str = "cloze"
    top: int = 5  # units whose flips are measured
    ablation: AblationSettings = field(default_factory=AblationSettings)


@dataclass
class Session:
    """A loaded baseline, its weight bank and a corpus meter against its stored rows."""

    spec: ModelSpec
    backend: Any
    bank: WeightBank
    meter: CorpusMeter

    def close(self) -> None:
        self.bank.use({})
        self.backend.close()


def open_session(spec: ModelSpec, settings: AblationSettings, shown: Display) -> Session:
    from flipscope._cache import cache_root
    from flipscope._kld import CorpusSetup, baseline_store
    from flipscope.tasks.corpus import load_corpus

    text = load_corpus(settings.corpus)
    options = LoadOptions(device=settings.device, dtype=settings.dtype).resolved()
    folder = Path(settings.cache_dir) if settings.cache_dir else cache_root() / "kld"
    setup = CorpusSetup(
        ctx=settings.ctx, scored_fraction=settings.scored_fraction, max_windows=settings.chunks, batch=settings.batch
    )
    stored, plan, _, _ = baseline_store(spec, text, options, setup, folder=folder, use_cache=True, shown=shown)
    backend = load_backend(spec, options)
    if not hasattr(backend, "model") or not hasattr(backend, "corpus_logprobs"):
        backend.close()
        raise FlipscopeError(
            f"{spec.label()}: attribution swaps weights inside a transformers model",
            fix="give an hf: or bundled: baseline",
        )
    assert stored is not None
    stored.check_matches(tokenizer_fingerprint=backend.info.tokenizer_fingerprint, vocab_size=backend.info.vocab_size,
                         corpus_sha256=text.sha256, label=spec.label())  # fmt: skip
    return Session(spec, backend, WeightBank(backend.model), CorpusMeter(backend, stored, plan, settings.batch))


#: A task ready for ablations: its name, every request, each item's span of requests, each item's right option.
TaskItems = tuple[str, list[Any], list[tuple[int, int]], list[int]]


def _task_items(names: tuple[str, ...], limit: int | None, fmt: str) -> list[TaskItems]:
    from flipscope.tasks import PromptFormat, item_requests, load_task

    out = []
    for name in names:
        task = load_task(name, limit=limit)
        prompts = item_requests(task, PromptFormat(fmt), 0)
        requests: list[Any] = []
        spans: list[tuple[int, int]] = []
        for p in prompts:
            spans.append((len(requests), len(requests) + len(p.requests)))
            requests += p.requests
        out.append((task.name, requests, spans, [item.answer for item in task.items]))
    return out


def attribute(
    baseline: str,
    candidate: str,
    settings: AttributeSettings = AttributeSettings(),
    *,
    out: str | Path | None = None,
    display: Display | None = None,
) -> tuple[AttributionRun, Path]:
    """Rank the units of ``candidate``'s compression by how much of its corpus KL (and flips) each explains."""
    from flipscope._compare import library_versions
    from flipscope.store.run_dir import check_out, claim_run_dir

    shown = display or NullDisplay()
    check_out(out)
    base_spec, (cand_spec,) = parse_models(baseline, [candidate])
    if cand_spec.base().label() != base_spec.base().label():
        raise FlipscopeError(f"{candidate} is not {baseline} with a compression", fix="write it as BASELINE+METHOD")
    started = time.monotonic()
    session = open_session(base_spec.base(), settings.ablation, shown)
    try:
        changed = capture_compression(session.bank, cand_spec, session.backend)
        units = make_units(
            [(n, session.bank.modules[n].weight.numel()) for n in changed], settings.by, span=settings.span
        )
        tasks = _task_items(settings.tasks, settings.limit, settings.format)
        passes = 1 + 2 * len(units)
        log.info(
            "%d units (%s): %d corpus passes of %d windows%s",
            len(units),
            settings.by,
            passes,
            settings.ablation.chunks,
            f", then {2 + min(settings.top, len(units))} task passes" if tasks else "",
        )
        results, kl_c = _ablate(session, units, changed, passes, shown)
        flips: dict[str, TaskFlips] = {}
        if tasks:
            results, flips = _flips(session, tasks, units, results, changed, settings.top, shown)
    finally:
        session.close()
    run = AttributionRun(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions=library_versions(),
        baseline=base_spec.label(),
        candidate=cand_spec.label(),
        by=str(settings.by),
        settings=_settings_record(settings),
        candidate_kl=kl_c,
        sum_single_kl=sum(u.kl_only for u in results),
        flips=flips,
        units=results,
        seconds=time.monotonic() - started,
        notes=["KL: mean per-position KL(baseline‖model) on the corpus against the cached baseline store"],
    )
    folder = claim_run_dir(out, prefix="attribute-")
    write_attribution(folder, run)
    return run, folder


def _settings_record(settings: AttributeSettings) -> dict[str, Any]:
    a = settings.ablation
    return {
        "corpus": a.corpus or "default",
        "chunks": a.chunks,
        "ctx": a.ctx,
        "scored_fraction": a.scored_fraction,
        "dtype": a.dtype,
        "tasks": list(settings.tasks),
        "limit": settings.limit,
        "format": settings.format,
        "top": settings.top,
        "span": settings.span,
    }


def _ablate(session: Session, units: list[Unit], changed: list[str], passes: int, shown: Display
            ) -> tuple[list[UnitResult], float]:  # fmt: skip
    bank, meter = session.bank, session.meter
    everything = dict.fromkeys(changed, "candidate")
    with shown.progress("ablations", passes) as advance:
        bank.use(everything)
        kl_c = meter()
        advance(1)
        results = []
        for unit in units:
            bank.use(dict.fromkeys(unit.linears, "candidate"))
            only = meter()
            bank.use({n: v for n, v in everything.items() if n not in unit.linears})
            without = meter()
            advance(2)
            results.append(UnitResult(unit=unit.name, linears=len(unit.linears), params=unit.params, kl_only=only,
                                      kl_without=without, explained=kl_c - without))  # fmt: skip
    return sorted(results, key=lambda u: -u.explained), kl_c


def _flips(session: Session, tasks: list[Any], units: list[Unit], results: list[UnitResult], changed: list[str],
           top: int, shown: Display) -> tuple[list[UnitResult], dict[str, TaskFlips]]:  # fmt: skip
    bank = session.bank
    everything = dict.fromkeys(changed, "candidate")
    by_name = {u.name: u for u in units}
    chosen = results[: min(top, len(results))]

    def flipped(base: list[bool], other: list[bool]) -> tuple[int, int]:
        return sum(b and not o for b, o in zip(base, other, strict=True)), sum(
            o and not b for b, o in zip(base, other, strict=True))  # fmt: skip

    flips: dict[str, TaskFlips] = {}
    restored: dict[str, int] = {u.unit: 0 for u in chosen}
    with shown.progress("task ablations", len(tasks) * (2 + len(chosen))) as advance:
        for name, requests, spans, targets in tasks:
            bank.use({})
            base = correctness(session.backend, requests, spans, targets)
            bank.use(everything)
            cand = correctness(session.backend, requests, spans, targets)
            advance(2)
            c2i, i2c = flipped(base, cand)
            flips[name] = TaskFlips(n=len(base), c2i=c2i, i2c=i2c)
            for unit in chosen:
                bank.use({n: v for n, v in everything.items() if n not in by_name[unit.unit].linears})
                c, i = flipped(base, correctness(session.backend, requests, spans, targets))
                restored[unit.unit] += c + i
                advance(1)
    total = sum(f.c2i + f.i2c for f in flips.values())
    updated = [u.model_copy(update={"flips_without": restored[u.unit], "flips_restored": total - restored[u.unit]})
               if u.unit in restored else u for u in results]  # fmt: skip
    return updated, flips
