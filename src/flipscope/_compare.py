"""``compare``: the baseline once, then every candidate against it, on every task; writes a run directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from flipscope._cache import cache_root, content_hash
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, TaskSummary, summarize_run
from flipscope.metrics.kl import DEFAULT_TAIL_SAMPLES, DEFAULT_TOPK
from flipscope.models import Backend, LoadOptions, ModelSpec, fingerprint, load_backend, parse_models
from flipscope.models.registry import same_weights
from flipscope.store import (
    ModelEntry,
    PassResult,
    PassStore,
    ReferenceRows,
    RunFile,
    Settings,
    TaskEntry,
    records_frame,
    write_run,
)
from flipscope.store.run_dir import check_out, claim_run_dir
from flipscope.tasks import ItemRequests, PromptFormat, TaskData, check_task, item_requests, load_task

log = logging.getLogger(__name__)

#: Bumped whenever scoring changes what a cached pass would contain.
SCORING_VERSION = 6


@dataclass
class Comparison:
    """What ``compare`` returns: the run file (settings, summaries) and where it was written."""

    run: RunFile
    out: Path
    scores: dict[str, list[ItemScore]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, dict[str, TaskSummary]]:
        return self.run.summary


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("flipscope", "torch", "transformers", "numpy", "pandas", "pyarrow", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass(frozen=True)
class _TaskWork:
    """A task's items, the prompts built from them, and their content hash (computed once, used by every model)."""

    task: TaskData
    prompts: list[ItemRequests]
    digest: str

    @classmethod
    def build(cls, task: TaskData, fmt: PromptFormat, fewshot: int) -> _TaskWork:
        prompts = item_requests(task, fmt, fewshot)
        text = [[[r.prefix, r.prompt, list(r.continuations)] for r in p.requests] + [p.option_chars] for p in prompts]
        return cls(task, prompts, content_hash(text))

    @property
    def n_requests(self) -> int:
        return sum(len(p.requests) for p in self.prompts)


class _Runner:
    def __init__(self, settings: Settings, display: Display, use_cache: bool, cache_dir: Path) -> None:
        self.settings = settings
        self.display = display
        self.use_cache = use_cache
        self.store = PassStore(cache_dir)
        self.options = LoadOptions(device=settings.device, dtype=settings.dtype, batch_size=settings.batch_size)
        self.notes: list[str] = []

    def run_model(
        self,
        spec: ModelSpec,
        role: str,
        tasks: list[_TaskWork],
        baseline: dict[str, PassResult] | None,
    ) -> tuple[ModelEntry, dict[str, PassResult]]:
        from flipscope._passes import TOPK_APPROXIMATE, TOPK_BOUND, run_pass

        weights = fingerprint(spec)
        entry = ModelEntry(spec=spec.label(), role=role, fingerprint=weights)
        backend: Backend | None = None
        results: dict[str, PassResult] = {}
        try:
            for work in tasks:
                task = work.task
                ref = baseline[task.name] if baseline else None
                key = content_hash(
                    {
                        "v": SCORING_VERSION,
                        "model": weights,
                        "requests": work.digest,
                        "dtype": self.settings.dtype,
                        "device": self.settings.device,
                        "batch": self.settings.batch_size,
                        "store": [self.settings.topk, self.settings.tail_samples] if ref is None else None,
                        "reference": ref.key if ref else None,
                    }
                )
                cached = self.store.load(key) if self.use_cache else None
                if cached is not None:
                    log.info("%s on %s: reusing cached results %s", spec.label(), task.name, key)
                    results[task.name] = cached
                    entry.reused[task.name] = True
                else:
                    if backend is None:
                        backend = load_backend(spec, self.options)
                    reference, exact = self._reference(backend, ref, spec)
                    with self.display.progress(f"{role} {spec.label()} · {task.name}", work.n_requests) as advance:
                        result = run_pass(
                            backend,
                            task,
                            work.prompts,
                            key=key,
                            reference=reference,
                            exact=exact,
                            progress=advance,
                            topk=self.settings.topk if ref is None else None,
                            tail_samples=self.settings.tail_samples,
                        )
                    self.store.save(result)
                    results[task.name] = result
                    entry.reused[task.name] = False
                entry.passes[task.name] = key
                entry.tokenizer_fingerprint = results[task.name].tokenizer
                entry.details = dict(results[task.name].model.get("details", {}))
                measured = results[task.name].model
                if measured.get("token_kl") == TOPK_APPROXIMATE:
                    entry.details["token_kl"] = TOPK_APPROXIMATE
                    self._note(
                        f"{spec.label()}: token KL is {TOPK_APPROXIMATE} — over the tokens that both the baseline's "
                        "and the candidate's top-k name (matched by text) plus one rest bucket; a lower bound of the "
                        "full-vocabulary KL"
                    )
                    unshared, positions = measured.get("token_kl_unshared", (0, 0))
                    if unshared:
                        self._note(
                            f"{spec.label()} on {task.name}: at {unshared} of {positions} answer-token positions the "
                            "two top-k lists share no token; those positions are left out of token KL (not scored 0)"
                        )
                elif measured.get("token_kl") == "exact" and self.settings.tail_samples == 0:
                    entry.details["token_kl"] = TOPK_BOUND
        finally:
            if backend is not None:
                backend.close()
        return entry, results

    def _reference(
        self, backend: Backend, ref: PassResult | None, spec: ModelSpec
    ) -> tuple[ReferenceRows | None, bool]:
        """The baseline rows to measure this candidate's token KL against, and whether it is exact (full rows over
        one vocabulary) or top-k approximate (a side gives only a server's top-k, matched by token text)."""
        if ref is None or ref.reference is None:
            return None, True
        rows, kind = backend.info.capabilities.rows, ref.reference.kind
        if rows is None:
            self._note(f"{spec.label()} gives no per-token log-probabilities, so token KL is not reported for it")
            return None, True
        if rows == "full" and kind == "full" and backend.info.tokenizer_fingerprint == ref.tokenizer:
            return ref.reference, True
        if "topk" in (rows, kind) and ref.reference.pieces is not None:
            return ref.reference, False
        self._note(
            f"{spec.label()} has a different tokenizer from the baseline's: token KL needs the same vocabulary, "
            "so it is not reported; choice-level metrics (accuracy, flips, choice KL) still are"
        )
        return None, True

    def _note(self, message: str) -> None:
        log.warning(message)
        if message not in self.notes:
            self.notes.append(message)


def compare(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    *,
    tasks: Sequence[str] = ("mmlu",),
    limit: int | None = None,
    fewshot: int = 0,
    format: str | PromptFormat = PromptFormat.CLOZE,
    seed: int = 0,
    topk: int = DEFAULT_TOPK,
    tail_samples: int = DEFAULT_TAIL_SAMPLES,
    out: str | Path | None = None,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 16,
    use_cache: bool = True,
    cache_dir: str | Path | None = None,
    display: Display | None = None,
) -> Comparison:
    """Run the baseline once and each candidate on ``tasks``; return and write the paired comparison.

    Every model pass is cached under ``cache_dir`` (default: the flipscope cache's ``passes/``) by a content
    hash of (weights, compression, task items, prompts, settings): the baseline runs once for any number of
    candidates and runs, and an interrupted run resumes from its finished passes.
    """
    shown: Display = display or NullDisplay()
    try:
        fmt = PromptFormat(format)
    except ValueError:
        raise FlipscopeError(f"unknown prompt format {format!r}", fix="use cloze or letter") from None
    if batch_size < 1:
        raise FlipscopeError(f"--batch-size must be at least 1, got {batch_size}")
    if topk < 1 or tail_samples < 0:
        raise FlipscopeError(f"--topk must be ≥ 1 and --tail-samples ≥ 0, got {topk} and {tail_samples}")
    if not tasks:
        raise FlipscopeError("no task given", fix="use --tasks mmlu or a file")
    for name in tasks:  # task errors first: they need nothing fetched
        check_task(name, fewshot=fewshot, limit=limit)
    check_out(out)
    base_spec, cand_specs = parse_models(baseline, candidates)
    settings = Settings(
        format=fmt.value,
        fewshot=fewshot,
        limit=limit,
        seed=seed,
        topk=topk,
        tail_samples=tail_samples,
        device=LoadOptions(device, dtype).resolved().device,  # the device used, as cache keys and run.json hold it
        dtype=dtype,
        batch_size=batch_size,
    )
    loaded = [load_task(name, fewshot=fewshot, limit=limit, seed=seed) for name in tasks]
    if len({t.name for t in loaded}) != len(loaded):
        raise FlipscopeError("a task is named twice", fix="give each task once")
    work = [_TaskWork.build(t, fmt, fewshot) for t in loaded]
    runner = _Runner(settings, shown, use_cache, Path(cache_dir) if cache_dir else cache_root() / "passes")
    base_entry, base_results = runner.run_model(base_spec, "baseline", work, None)
    base_scores = [s for r in base_results.values() for s in r.scores]
    entries, summary, scores = [], {}, {base_spec.label(): base_scores}
    notes = [f"{t.name}: {t.meta['note']}" for t in loaded if "note" in t.meta]
    for r in base_results.values():
        if r.reference is not None:
            how = f"+ {tail_samples} sampled tail tokens (unbiased mean)" if tail_samples else "(a lower bound)"
            notes.append(
                f"token KL: the baseline is stored as top-{topk} log-probs + tail mass {how} per answer token; "
                f"mean tail mass {r.reference.mean_tail_mass:.3f}"
            )
            break
    for spec in cand_specs:
        entry, results = runner.run_model(spec, "candidate", work, base_results)
        entries.append(entry)
        cand_scores = [s for r in results.values() for s in r.scores]
        scores[spec.label()] = cand_scores
        summary[spec.label()] = summarize_run(base_scores, cand_scores, [t.name for t in loaded])
        floor = noise_floor_note(base_spec, spec, summary[spec.label()])
        if floor:
            notes.append(floor)
    notes += runner.notes
    run = RunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=library_versions().get("flipscope", "unknown"),
        versions=library_versions(),
        settings=settings,
        baseline=base_entry,
        candidates=entries,
        tasks=[TaskEntry(name=t.name, meta=t.meta) for t in loaded],
        summary=summary,
        notes=notes,
    )
    folder = claim_run_dir(out)
    roles = {label: ("baseline" if label == base_spec.label() else "candidate", s) for label, s in scores.items()}
    write_run(folder, run, records_frame(roles), _items_frame(loaded))
    return Comparison(run, folder, scores)


def noise_floor_note(base: ModelSpec, cand: ModelSpec, per_task: dict[str, TaskSummary]) -> str | None:
    """Where the candidate runs the baseline's very weights on another engine, what it measures is the engines'
    noise floor: say so, with the numbers."""
    weights = same_weights(base)
    if weights is None or weights != same_weights(cand) or base.source == cand.source:
        return None
    s = per_task.get("all") or next(iter(per_task.values()))
    flips = "n/a" if s.flips is None else f"{s.flips:.1%}"
    choice = "n/a" if s.choice_kl_mean is None else f"{s.choice_kl_mean:.1e}"
    token = "n/a" if s.token_kl_mean is None else f"{s.token_kl_mean:.1e}"
    return (
        f"{cand.label()} runs the baseline's weights ({weights}) on another engine ({base.source} → {cand.source}): "
        f"its flips {flips}, choice KL {choice} and token KL {token} are the two backends' noise floor; "
        "compression effects below it cannot be told apart across these engines"
    )


def _items_frame(tasks: list[TaskData]) -> Any:
    import pandas as pd

    rows = [{**asdict(item), "task": t.name, "choices": list(item.choices)} for t in tasks for item in t.items]
    return pd.DataFrame(rows)
