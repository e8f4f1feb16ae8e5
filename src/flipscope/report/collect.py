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


Run = CompareRun | KLDRun | MTBenchRun | AttributionDir


@dataclass(frozen=True)
class ReportInput:
    baseline: str
    compares: list[CompareRun] = field(default_factory=list)
    klds: list[KLDRun] = field(default_factory=list)
    mtbenches: list[MTBenchRun] = field(default_factory=list)
    attributions: list[AttributionDir] = field(default_factory=list)


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
        from flipscope.attribution.run import read_attribution

        return AttributionDir(folder, read_attribution(folder))
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
    if isinstance(run, AttributionDir):
        return str(run.run.baseline)
    return str(run.run.baseline.spec)


def collect(folders: Sequence[str | Path]) -> ReportInput:
    """Read every run directory; they must share one baseline (a report compares candidates against it)."""
    if not folders:
        raise FlipscopeError("no run directory given", fix="flipscope report RUN_DIR [RUN_DIR...]")
    runs = [_read(Path(f)) for f in folders]
    baselines = {_baseline(r): r.folder for r in runs}
    if len(baselines) > 1:
        listed = "; ".join(f"{folder}: {spec}" for spec, folder in baselines.items())
        raise FlipscopeError(
            f"these runs have different baselines ({listed}); one report compares candidates against one baseline",
            fix="report them separately, or rerun with the same baseline spec",
        )
    return ReportInput(
        baseline=_baseline(runs[0]),
        compares=[r for r in runs if isinstance(r, CompareRun)],
        klds=[r for r in runs if isinstance(r, KLDRun)],
        mtbenches=[r for r in runs if isinstance(r, MTBenchRun)],
        attributions=[r for r in runs if isinstance(r, AttributionDir)],
    )
