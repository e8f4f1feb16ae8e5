"""The stored runs one report is made of: `compare`, `kld` and `mtbench` run directories that share a baseline,
read back and re-summarised from their files (no model is loaded)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore
from flipscope.store import RunFile


class RunKind(StrEnum):
    COMPARE = "compare"
    KLD = "kld"
    MTBENCH = "mtbench"
    ATTRIBUTE = "attribute"
    SCREEN = "screen"


@dataclass(frozen=True)
class CompareRun:
    folder: Path
    run: RunFile  # summaries recomputed from the records
    scores: dict[str, list[ItemScore]]  # model label → its per-item scores
    items: Any  # DataFrame of the questions (task, item_id, question, choices, …); None where unreadable


@dataclass(frozen=True)
class KLDRun:
    folder: Path
    run: Any  # KLDRunFile, summaries recomputed from positions.parquet
    positions: Any  # DataFrame: one row per (candidate, scored position)


@dataclass(frozen=True)
class MTBenchRun:
    folder: Path
    run: Any  # MTBenchRunFile
    summary: dict[str, Any]  # summarize_mtbench's recomputed summary


@dataclass(frozen=True)
class AttributionDir:
    folder: Path
    run: Any  # AttributionRun


@dataclass(frozen=True)
class ScreenDir:
    folder: Path
    run: Any  # ScreenRunFile, numbers recomputed from the runs beside it (report.screen_table.load_screen_run)


Run = CompareRun | KLDRun | MTBenchRun | AttributionDir | ScreenDir


@dataclass(frozen=True)
class ReportInput:
    baseline: str
    compares: list[CompareRun] = field(default_factory=list)
    klds: list[KLDRun] = field(default_factory=list)
    mtbenches: list[MTBenchRun] = field(default_factory=list)
    attributions: list[AttributionDir] = field(default_factory=list)
    screens: list[ScreenDir] = field(default_factory=list)


def run_kind(folder: Path) -> RunKind:
    """Which command wrote ``folder``; a clear error where it is not a run directory."""
    if not (folder / "run.json").is_file():
        raise FlipscopeError(
            f"{folder} is not a flipscope run directory (no run.json)",
            fix="give folders written by flipscope compare, kld or mtbench (their --out)",
        )
    if (folder / "positions.parquet").is_file():
        return RunKind.KLD
    try:
        kind = json.loads((folder / "run.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None  # read_run says what is wrong with it
    if kind == "attribute":
        return RunKind.ATTRIBUTE
    if kind == "screen":
        return RunKind.SCREEN
    return RunKind.MTBENCH if kind == "mtbench" else RunKind.COMPARE


def _items(folder: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(folder / "items.parquet")
    except (OSError, ValueError):
        return None  # the explorer then shows item ids without their text


def _read(folder: Path) -> Run:
    kind = run_kind(folder)
    if kind is RunKind.ATTRIBUTE:
        from flipscope.store.attribute_run import read_attribution

        return AttributionDir(folder, read_attribution(folder))
    if kind is RunKind.SCREEN:
        from flipscope.report.screen_load import load_screen_run

        return ScreenDir(folder, load_screen_run(folder))
    if kind is RunKind.KLD:
        from flipscope.report.kld_table import load_kld_run
        from flipscope.store.kld_run import read_kld_run

        return KLDRun(folder, load_kld_run(folder), read_kld_run(folder)[1])
    if kind is RunKind.MTBENCH:
        from flipscope.report.mtbench_table import load_mtbench_run

        mt_run, summary = load_mtbench_run(folder)
        return MTBenchRun(folder, mt_run, summary)
    from flipscope.report import load_run_scores

    run, scores = load_run_scores(folder)
    return CompareRun(folder, run, scores, _items(folder))


def _baseline(run: Run) -> str:
    if isinstance(run, KLDRun):
        return str(run.run.baseline["spec"])
    if isinstance(run, AttributionDir | ScreenDir):
        return str(run.run.baseline)
    return str(run.run.baseline.spec)


#: Values that say a run did not record a setting (an imported lm-eval log's dtype, an unresolved device).
_UNKNOWN = ("", "unknown", "auto", "-1", "None")


def baseline_identity(run: Run) -> dict[str, str | None]:
    """What makes a run's baseline numbers what they are: its spec, weights fingerprint, dtype, device, prompt format
    and few-shot count; None where this kind of run does not record one (then it is not compared)."""
    fields: dict[str, object] = {"spec": _baseline(run)}
    if isinstance(run, CompareRun):
        s = run.run.settings
        fields |= {"weights fingerprint": run.run.baseline.fingerprint, "dtype": s.dtype, "device": s.device,
                   "format": s.format}  # fmt: skip
        own = {t.name: t.meta["fewshot"] for t in run.run.tasks if "fewshot" in t.meta}
        if len(own) < len(run.run.tasks):  # the global count is the multiple-choice tasks' own
            fields["few-shot"] = s.fewshot
        for name, shots in own.items():  # a free-form task's own count (gsm8k: 8 unless --fewshot said otherwise)
            fields[f"{name} few-shot"] = shots
    elif isinstance(run, KLDRun):
        s = run.run.settings
        fields |= {"weights fingerprint": run.run.baseline.get("fingerprint"), "dtype": s.dtype, "device": s.device}
    elif isinstance(run, MTBenchRun):
        s = run.run.settings
        fields |= {"weights fingerprint": run.run.baseline.fingerprint, "dtype": s.get("dtype"),
                   "device": s.get("device")}  # fmt: skip
    elif isinstance(run, ScreenDir):
        fields |= {"dtype": run.run.settings.get("dtype")}
    else:
        s = run.run.settings.get("ablation", run.run.settings)
        fields |= {"dtype": s.get("dtype"), "device": s.get("device")}
    return {k: None if v is None or str(v) in _UNKNOWN else str(v) for k, v in fields.items()}


def check_one_baseline(runs: Sequence[Run]) -> None:
    """One report compares candidates against one baseline: every run's baseline must be the same model run the
    same way (every field both runs record agrees), else a one-line error naming the two runs, the field and the
    two values."""
    seen: dict[str, tuple[str, Path]] = {}  # field → the first value recorded, and the run that recorded it
    for run in runs:
        for name, value in baseline_identity(run).items():
            if value is None:
                continue
            first, where = seen.setdefault(name, (value, run.folder))
            if value != first:
                raise FlipscopeError(
                    f"runs {where} and {run.folder} have different baselines: {name} {first} ({where.name}) vs "
                    f"{value} ({run.folder.name}); one report compares candidates against one baseline",
                    fix="report them separately, or rerun one with the other's baseline and settings",
                )


def collect(folders: Sequence[str | Path]) -> ReportInput:
    """Read every run directory; they must share one baseline (a report compares candidates against it)."""
    if not folders:
        raise FlipscopeError("no run directory given", fix="flipscope report RUN_DIR [RUN_DIR...]")
    runs = [_read(Path(f)) for f in folders]
    check_one_baseline(runs)
    return ReportInput(
        baseline=_baseline(runs[0]),
        compares=[r for r in runs if isinstance(r, CompareRun)],
        klds=[r for r in runs if isinstance(r, KLDRun)],
        mtbenches=[r for r in runs if isinstance(r, MTBenchRun)],
        attributions=[r for r in runs if isinstance(r, AttributionDir)],
        screens=[r for r in runs if isinstance(r, ScreenDir)],
    )
