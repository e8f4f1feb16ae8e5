"""``flipscope attribute``: which units of a candidate's compression its corpus KL and flips come from, measured by
ablation against the cached baseline (weights swapped in memory between ablations)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flipscope.attribution.ablate import CorpusMeter, WeightBank, WindowKL, capture_compression, correctness
from flipscope.attribution.units import Unit, UnitKind, check_span, make_units
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec, load_backend, parse_models
from flipscope.store.attribute_run import AttributionRun, TaskFlips, UnitResult, write_attribution
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AblationSettings:
    """Shared by `attribute` and `advise` (CLI and API): the corpus KL's windows and the model's placement."""

    corpus: str | None = None  # None: kld's default corpus (``advise``: its mixed calibration corpus)
    chunks: int = 8  # windows of ``ctx`` tokens
    first: int = 0  # index of the first window: windows first … first + chunks − 1 of the corpus
    ctx: int = 512
    scored_fraction: float = 0.5  # share of each window scored, from its end (as kld)
    device: str = "auto"
    dtype: str = "float32"
    batch: int = 1
    cache_dir: str | None = None  # where kld's baseline stores live (default: the flipscope cache)
    resume: bool = True  # an ablation recomputes from its first changed block on (the blocks' inputs captured once)


@dataclass(frozen=True, kw_only=True)
class AttributeSettings:
    by: UnitKind = UnitKind.BLOCK
    span: int | None = None  # with by=module: consecutive blocks per unit (None: all blocks)
    tasks: tuple[str, ...] = ()
    limit: int | None = 200
    format: str = "cloze"
    top: int = 5  # units whose flips are measured
    ablation: AblationSettings = field(default_factory=AblationSettings)


@dataclass(frozen=True)
class Windows:
    """Which windows of which corpus a KL is measured on; every plan and attribution run records it."""

    corpus: str
    sha256: str
    first: int
    count: int

    @property
    def indices(self) -> list[int]:
        return list(range(self.first, self.first + self.count))

    def record(self) -> dict[str, Any]:
        return {"corpus": self.corpus, "sha256": self.sha256, "windows": self.indices}

    def overlaps(self, other: Windows) -> bool:
        return self.sha256 == other.sha256 and max(self.first, other.first) < min(
            self.first + self.count, other.first + other.count
        )


@dataclass
class Session:
    """A loaded baseline, its weight bank and a corpus meter against its stored rows (and, for ``advise``, a second
    meter on evaluation windows disjoint from the first)."""

    spec: ModelSpec
    backend: Any
    bank: WeightBank
    meter: Callable[[], WindowKL]
    windows: Windows
    eval_meter: Callable[[], WindowKL] | None = None
    eval_windows: Windows | None = None

    def use_bank(self, bank: WeightBank) -> None:
        """Swap weights through ``bank`` from now on (its meters measure from the first block it changes)."""
        self.bank.use({})
        self.bank = bank
        for name in ("meter", "eval_meter"):
            meter = getattr(self, name)
            if isinstance(meter, CorpusMeter):
                setattr(self, name, replace(meter, bank=bank))

    def close(self) -> None:
        self.bank.use({})
        self.backend.close()


@dataclass(frozen=True)
class _Measured:
    """One corpus's windows, ready to measure: the baseline's store, the windows' plan and where their rows start."""

    windows: Windows
    stored: Any
    plan: Any
    offset: int


def _windows(corpus: str | None, first: int, count: int) -> tuple[Any, Windows]:
    from flipscope.tasks.corpus import load_corpus

    if first < 0 or count < 1:
        raise FlipscopeError(f"windows {first}:{first + count} of {corpus}: give A:B with 0 ≤ A < B")
    text = load_corpus(corpus)
    return text, Windows(text.source, text.sha256, first, count)


def _stored_windows(spec: ModelSpec, text: Any, windows: Windows, settings: AblationSettings, options: LoadOptions,
                    shown: Display) -> _Measured:  # fmt: skip
    """The baseline's store on ``text`` (built or found in kld's cache) covering ``windows``, those windows' plan,
    and the position their rows start at."""
    from flipscope.passes.kld import CorpusSetup, Plan, baseline_store
    from flipscope.plumbing.cache import cache_root

    first, count = windows.first, windows.count
    folder = Path(settings.cache_dir) if settings.cache_dir else cache_root() / "kld"
    setup = CorpusSetup(ctx=settings.ctx, scored_fraction=settings.scored_fraction, max_windows=first + count,
                        batch=settings.batch)  # fmt: skip
    stored, plan, _, _ = baseline_store(spec, text, options, setup, folder=folder, use_cache=True, shown=shown)
    assert stored is not None
    if len(plan.windows) < first + count:
        raise FlipscopeError(
            f"{text.source} has {len(plan.windows)} windows of {settings.ctx} tokens; windows {first}–"
            f"{first + count - 1} were asked for",
            fix="ask for fewer windows, a lower --ctx, or a longer corpus",
        )
    offset = sum(w.scored for w in plan.windows[:first])
    chosen = Plan(plan.windows[first : first + count], [], plan.tokenizer, plan.vocab_size)
    return _Measured(windows, stored, chosen, offset)


def open_session(spec: ModelSpec, settings: AblationSettings, shown: Display, *,
                 evaluation: tuple[str | None, int, int] | None = None) -> Session:  # fmt: skip
    """The baseline loaded once with its weight bank and a meter on ``settings``' windows; with ``evaluation``
    (corpus, first window, count) a second meter on those windows, refused where they overlap the first's."""
    options = LoadOptions(device=settings.device, dtype=settings.dtype).resolved()
    corpora = [_windows(settings.corpus, settings.first, settings.chunks)]
    if evaluation is not None:
        corpora.append(_windows(*evaluation))
        cal, ev = corpora[0][1], corpora[1][1]
        if cal.overlaps(ev):
            raise FlipscopeError(
                f"calibration windows {cal.first}–{cal.first + cal.count - 1} and evaluation windows {ev.first}–"
                f"{ev.first + ev.count - 1} of {cal.corpus} overlap: a plan would be judged on text it was fitted to",
                fix=f"give --eval-windows from {cal.first + cal.count} on, or another --eval-corpus",
            )
    measured = [_stored_windows(spec, text, windows, settings, options, shown) for text, windows in corpora]
    backend = load_backend(spec, options)
    if not hasattr(backend, "model") or not hasattr(backend, "corpus_logprobs"):
        backend.close()
        raise FlipscopeError(
            f"{spec.label()}: attribution swaps weights inside a transformers model",
            fix="give an hf: or bundled: baseline",
        )
    from flipscope.attribution.resume import BlockInputs

    bank, meters = WeightBank(backend.model), []
    for m in measured:
        m.stored.check_matches(tokenizer_fingerprint=backend.info.tokenizer_fingerprint,
                               vocab_size=backend.info.vocab_size, corpus_sha256=m.windows.sha256,
                               label=spec.label())  # fmt: skip
        inputs = BlockInputs(backend.model) if settings.resume else None
        meters.append(CorpusMeter(backend, m.stored, m.plan, settings.batch, offset=m.offset, bank=bank,
                                  inputs=inputs if inputs is not None and inputs.usable else None))  # fmt: skip
    session = Session(spec, backend, bank, meters[0], measured[0].windows)
    if evaluation is not None:
        session.eval_meter, session.eval_windows = meters[1], measured[1].windows
    return session


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


@releases_out
def attribute(
    baseline: str,
    candidate: str,
    settings: AttributeSettings = AttributeSettings(),
    *,
    out: str | Path | None = None,
    display: Display | None = None,
) -> tuple[AttributionRun, Path]:
    """Rank the units of ``candidate``'s compression by how much of its corpus KL (and flips) each explains."""
    from flipscope.plumbing.version import library_versions

    shown = display or NullDisplay()
    check_out(out)
    check_span(settings.by, settings.span)
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
        windows = session.windows
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
        settings=_settings_record(settings, windows),
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


def _settings_record(settings: AttributeSettings, windows: Windows) -> dict[str, Any]:
    a = settings.ablation
    return {
        **windows.record(),  # corpus (its source), sha256, window indices
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
    bank = session.bank
    everything = dict.fromkeys(changed, "candidate")

    def meter(what: str) -> float:
        got = session.meter()
        if got.bad:  # a window is never dropped: that would give this ablation a different, better-looking mean
            raise FlipscopeError(
                f"{what}: NaN or infinite KL in window(s) {', '.join(map(str, got.bad))}; it cannot be measured",
                fix="check the compression's settings, or run in float32 (--dtype float32)",
            )
        return got.mean

    with shown.progress("ablations", passes) as advance:
        bank.use(everything)
        kl_c = meter("the candidate")
        advance(1)
        results = []
        for unit in units:
            bank.use(dict.fromkeys(unit.linears, "candidate"))
            only = meter(f"only {unit.name} compressed")
            bank.use({n: v for n, v in everything.items() if n not in unit.linears})
            without = meter(f"everything but {unit.name} compressed")
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
