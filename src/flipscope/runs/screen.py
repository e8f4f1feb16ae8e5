"""``screen``: cheap measures for every candidate of a sweep — corpus KL on a few windows (`kld`) and choice KL and
flips on a small item sample of each task (`compare --limit`) — and from them a predicted flip rate per task with a
prediction interval, a ranking, the Pareto set of size against flips and which candidates to run fully; optionally
the full `compare` on the chosen few. Writes a run directory holding the two (three) runs it is made of."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.models import ModelSpec, parse_models
from flipscope.plumbing.version import library_versions
from flipscope.runs.compare import CompareSettings, Comparison, compare
from flipscope.runs.kld import KLDResult, KldSettings, kld
from flipscope.runs.overrides import with_overrides
from flipscope.store import RunFile
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out
from flipscope.store.screen_run import (
    FULL_DIR,
    KLD_DIR,
    SAMPLE_DIR,
    Estimate,
    ScreenRunFile,
    StoredPair,
    write_screen_run,
)
from flipscope.store.screen_summary import Assessment, ScreenInputs, assess, task_flips

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ScreenSettings:
    """Everything a ``screen`` run is made with, the models and the display aside; shared by the CLI and the API."""

    tasks: Sequence[str] = ("mmlu",)  # as compare's: task names (lm-eval's) or files
    sample: int = 40  # items per task measured on every candidate (stratified, ``seed``)
    windows: int = 8  # corpus windows for corpus KL (0: no corpus KL; ranked by flips then)
    ctx: int = 512  # tokens per corpus window
    corpus: str | None = None  # as kld's --corpus (None: its offline default)
    calibrate: Sequence[str | Path] = ()  # earlier compare run directories: (choice KL, flips) pairs on all items
    then_compare: int | str | None = None  # run the full compare on the K best (an int) or on "pareto" (run fully?=yes)
    level: float = 0.95  # of the prediction intervals
    fewshot: int | None = None
    format: str = "cloze"
    seed: int = 0
    out: str | Path | None = None  # the run directory (None: runs/screen-<timestamp>)
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 16
    use_cache: bool = True
    cache_dir: str | Path | None = None  # cache root: passes/ and kld/ under it (None: the flipscope cache's)


@dataclass
class ScreenResult:
    """What ``screen`` returns: the run file, where it was written, and the runs it is made of."""

    run: ScreenRunFile
    out: Path
    sample: Comparison
    corpus: KLDResult | None = None
    full: Comparison | None = None


def screen(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    settings: ScreenSettings | None = None,
    *,
    display: Display | None = None,
    **fields: Any,
) -> ScreenResult:
    """Screen ``candidates`` against ``baseline``: corpus KL on ``windows`` windows and flips / choice KL on
    ``sample`` items per task, flips predicted per task from a calibration of flips against choice KL (fitted on
    ``calibrate`` runs, else on the sample leaving each candidate out), a ranking, the Pareto set of nominal bits per
    weight against predicted flips and "run fully?". Both measures are cached passes: the baseline runs once.
    ``fields``: settings by name (``sample=20``), put in ``settings`` (default: ``ScreenSettings()``)."""
    chosen = with_overrides(settings or ScreenSettings(), fields, command="screen", expected=ScreenSettings)
    return _screen(baseline, candidates, chosen, display=display, out=chosen.out)


def _check(chosen: ScreenSettings, n_candidates: int) -> None:
    if chosen.sample < 1:
        raise FlipscopeError(f"--sample must be at least 1 item per task, got {chosen.sample}")
    if chosen.windows < 0 or chosen.ctx < 8:
        raise FlipscopeError(f"--windows must be ≥ 0 and --ctx ≥ 8, got {chosen.windows} and {chosen.ctx}")
    if not 0 < chosen.level < 1:
        raise FlipscopeError(f"--level must be between 0 and 1, got {chosen.level}", fix="e.g. 0.95")
    if not n_candidates:
        raise FlipscopeError("name at least one candidate to screen", fix="e.g. +rtn:w4g64 +rtn:w3g64")
    then = chosen.then_compare
    if then is not None and then != "pareto" and not (isinstance(then, int) and then >= 1):
        raise FlipscopeError(f"--then-compare takes a count ≥ 1 or 'pareto', got {then!r}")


def read_calibration(folders: Sequence[str | Path]) -> tuple[list[StoredPair], dict[str, RunFile]]:
    """The (choice KL, flips) pairs of every candidate × task of earlier compare runs (their summaries recomputed
    from records), and those runs by folder."""
    from flipscope.report import load_run
    from flipscope.report.collect import RunKind, run_kind

    pairs, runs = [], {}
    for folder in folders:
        path = Path(folder)
        if run_kind(path) is not RunKind.COMPARE:
            raise FlipscopeError(f"--calibrate {path}: not a compare run directory",
                                 fix="give folders written by flipscope compare (their --out)")  # fmt: skip
        run = load_run(path)
        runs[str(path)] = run
        for label, by_task in run.summary.items():
            for task, s in by_task.items():
                if task != "all" and s.choice_kl_mean is not None and s.n:
                    pairs.append(StoredPair(candidate=label, task=task, choice_kl=s.choice_kl_mean,
                                            flips=s.flips_c2i + s.flips_i2c, n=s.n, run=str(path)))  # fmt: skip
    return pairs, runs


def measured_flips(runs: dict[str, RunFile], labels: Sequence[str]) -> dict[str, tuple[dict[str, Estimate], str]]:
    """Full-run flips (and Wilson interval) per task of each of ``labels`` found in ``runs``, with the folder."""
    out: dict[str, tuple[dict[str, Estimate], str]] = {}
    for folder, run in runs.items():
        for label in labels:
            by_task = run.summary.get(label)
            if label in out or not by_task:
                continue
            out[label] = (task_flips(by_task), folder)
    return out


@releases_out
def _screen(
    baseline: str | ModelSpec,
    candidates: Sequence[str | ModelSpec],
    chosen: ScreenSettings,
    *,
    display: Display | None,
    out: str | Path | None,
) -> ScreenResult:
    shown: Display = display or NullDisplay()
    _check(chosen, len(candidates))
    pairs, calibration_runs = read_calibration(chosen.calibrate)  # input errors before any model runs
    base_spec, cand_specs = parse_models(baseline, candidates)
    labels = [s.label() for s in cand_specs]
    if len(set(labels)) != len(labels):
        raise FlipscopeError("a candidate is named twice", fix="give each candidate once")
    check_out(out)
    folder = claim_run_dir(out, prefix="screen-")
    cache = Path(chosen.cache_dir) if chosen.cache_dir else None
    common = CompareSettings(tasks=list(chosen.tasks), fewshot=chosen.fewshot, format=chosen.format, seed=chosen.seed,
                             device=chosen.device, dtype=chosen.dtype, batch_size=chosen.batch_size,
                             use_cache=chosen.use_cache, cache_dir=cache / "passes" if cache else None)  # fmt: skip
    log.info("screen: %d candidates, %d items per task", len(labels), chosen.sample)
    sample = compare(base_spec, cand_specs, replace(common, limit=chosen.sample, out=folder / SAMPLE_DIR),
                     display=shown)  # fmt: skip
    corpus: KLDResult | None = None
    if chosen.windows:
        corpus = kld(base_spec, cand_specs, KldSettings(
            corpus=chosen.corpus, ctx=chosen.ctx, max_windows=chosen.windows, out=folder / KLD_DIR,
            device=chosen.device, dtype=chosen.dtype, use_cache=chosen.use_cache,
            cache_dir=cache / "kld" if cache else None), display=shown)  # fmt: skip
    inputs = ScreenInputs(
        baseline=sample.run.baseline.spec,
        tasks=[t.name for t in sample.run.tasks],
        summary=sample.run.summary,
        scores=sample.scores,
        corpus={c: (s.kl_mean.value, s.kl_mean.err) for c, s in corpus.summary.items()} if corpus else {},
        bits={s.label(): _bits(s, base_spec, chosen.dtype) for s in cand_specs},
        pairs=pairs,
        measured=measured_flips(calibration_runs, labels),
        level=chosen.level,
    )
    result = assess(inputs)
    full: Comparison | None = None
    picked: list[str] = []
    if chosen.then_compare is not None:
        picked = _pick(result, chosen.then_compare)
        specs = [s for s in cand_specs if s.label() in picked]
        full = compare(base_spec, specs, replace(common, out=folder / FULL_DIR), display=shown)
        result = assess(replace(inputs, measured=inputs.measured | measured_flips({FULL_DIR: full.run}, picked)))
    notes = _notes(chosen, sample, corpus, calibration_runs, inputs.baseline)
    run = _run_file(chosen, inputs, result, corpus, picked, notes + result.notes)
    write_screen_run(folder, run)
    return ScreenResult(run, folder, sample, corpus, full)


def _bits(spec: ModelSpec, base: ModelSpec, dtype: str) -> float | None:
    """Nominal bits per Linear weight of a candidate that is the baseline's weights compressed (as loaded: ``dtype``
    on hf/bundled sources); None for another model, or an uncompressed file of unknown packing."""
    from flipscope.compress.size import nominal_bits

    if spec.base() != base.base():
        return None
    return nominal_bits(spec.compression, dtype if spec.source in ("hf", "bundled") else "unknown")


def _pick(result: Assessment, then: int | str) -> list[str]:
    """The candidates ``--then-compare`` runs fully: the K first by rank, or those with run fully? = yes."""
    ranked = sorted(result.candidates, key=lambda c: c.rank)
    if then == "pareto":
        return [c.spec for c in ranked if c.run_fully == "yes"]
    return [c.spec for c in ranked[: int(then)]]


def _notes(chosen: ScreenSettings, sample: Comparison, corpus: KLDResult | None, calibration_runs: dict[str, RunFile],
           baseline: str) -> list[str]:  # fmt: skip
    notes = [
        f"sample: at most {chosen.sample} items per task (stratified, seed {chosen.seed}), a `compare` run in "
        f"{SAMPLE_DIR}/; its flips carry Wilson 95% intervals"
    ]
    if corpus is not None:
        s = corpus.run.settings
        notes.append(
            f"corpus KL: KL(B‖C) over {s.positions} positions of {s.windows} windows of {s.ctx} tokens "
            f"of {s.corpus}, {s.kl_forward}, ± its standard error over windows; a `kld` run in {KLD_DIR}/"
        )
    else:
        notes.append("no corpus KL (--windows 0)")
    for folder, run in calibration_runs.items():
        if run.baseline.spec != baseline:
            notes.append(f"--calibrate {folder} has another baseline ({run.baseline.spec}): its pairs relate flips "
                         "to KL of another model")  # fmt: skip
    return notes


def _run_file(chosen: ScreenSettings, inputs: ScreenInputs, result: Assessment, corpus: KLDResult | None,
              picked: list[str], notes: list[str]) -> ScreenRunFile:  # fmt: skip
    settings = {k: (str(v) if isinstance(v, Path) else list(map(str, v)) if isinstance(v, (list, tuple)) else v)
                for k, v in asdict(chosen).items()}  # fmt: skip
    versions = library_versions()
    return ScreenRunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=versions.get("flipscope", "unknown"),
        versions=versions,
        baseline=inputs.baseline,
        tasks=inputs.tasks,
        settings=settings,
        calibration=result.calibration,
        calibration_pairs=inputs.pairs,
        candidates=result.candidates,
        ranked_by=result.ranked_by,
        pareto_basis=result.pareto_basis,
        pooled=result.pooled,
        corpus_kl_kind=corpus.run.settings.kl_forward if corpus else None,
        kld_dir=KLD_DIR if corpus else None,
        full_dir=FULL_DIR if picked else None,
        then_compare=picked,
        notes=notes,
    )
