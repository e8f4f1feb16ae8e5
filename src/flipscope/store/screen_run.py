"""The run directory of `flipscope screen`: ``run.json`` (typed, ``kind`` "screen") beside the run directories it
is made of — ``sample/`` (a `compare` run on a few items per task), ``kld/`` (a `kld` run on a few windows; absent
with no windows) and, after ``--then-compare``, ``full/`` (a `compare` run on every item of the chosen few).

``run.json`` holds the settings, the calibration pairs taken from ``--calibrate`` runs (data: those folders may be
gone when the report is re-rendered) and every number shown; ``report.screen_table.load_screen_run`` recomputes
them from the folders beside it and those pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from flipscope.errors import FlipscopeError

SCREEN_SCHEMA = 1
SAMPLE_DIR = "sample"
KLD_DIR = "kld"
FULL_DIR = "full"

#: (point, low, high): a rate with its interval
Estimate = tuple[float, float, float]


class StoredPair(BaseModel):
    """A calibration pair read from a ``--calibrate`` run: one candidate on one task, measured on all its items."""

    candidate: str
    task: str
    choice_kl: float
    flips: int
    n: int
    run: str  # the folder it came from


class CalibrationInfo(BaseModel):
    #: "runs": pairs from --calibrate run directories; "sample": pairs measured on this screen's own sample
    source: Literal["runs", "sample"]
    runs: list[str] = Field(default_factory=list)
    pairs: int  # usable pairs in all (each prediction's own fit leaves its candidate's out: ``ScreenCandidate``)
    slope: float | None = None  # of the fit on every pair, log-log (see metrics.calibration)
    intercept: float | None = None
    resid_sd: float | None = None
    spearman: float | None = None  # rank correlation of KL and flips over the pairs
    level: float = 0.95


class ScreenCandidate(BaseModel):
    spec: str
    rank: int  # 1 = the most baseline-like by ``ScreenRunFile.ranked_by``
    bits: float | None  # nominal bits per Linear weight (compress.size); None: unknown
    corpus_kl: float | None  # mean KL(B‖C) over the kld windows' positions (what it is: ScreenRunFile.corpus_kl_kind)
    corpus_kl_se: float | None  # its standard error over windows
    choice_kl: dict[str, float | None]  # task (and "all") → the sample's mean choice KL
    sample_flips: dict[str, Estimate | None]  # task (and "all") → the sample's flip rate and Wilson 95% interval
    sample_n: dict[str, int]
    predicted_flips: dict[str, Estimate | None]  # task (and "all") → prediction and its prediction interval
    fit_pairs: int  # pairs in the fit that predicted this candidate (its own left out)
    pareto: bool
    run_fully: str  # yes | maybe | no (metrics.screening)
    measured_flips: dict[str, Estimate] = Field(default_factory=dict)  # full runs: --calibrate or --then-compare
    measured_from: str | None = None


class ScreenRunFile(BaseModel):
    schema_version: int = SCREEN_SCHEMA
    kind: Literal["screen"] = "screen"
    created: str
    flipscope_version: str
    versions: dict[str, str] = Field(default_factory=dict)
    baseline: str
    tasks: list[str]
    settings: dict[str, Any]
    calibration: CalibrationInfo
    calibration_pairs: list[StoredPair] = Field(default_factory=list)  # --calibrate only
    candidates: list[ScreenCandidate]
    ranked_by: str  # "corpus KL" | "sample choice KL" | "predicted flips" | "sample flips"
    pareto_basis: str  # "predicted flips" | "sample flips": the flips the Pareto set and "run fully?" use
    pooled: str  # the task key every candidate is ranked on: "all" (several tasks) or the one task
    corpus_kl_kind: str | None = None  # kld's kl_forward: "unbiased estimate", "exact", …; None: no windows
    sample_dir: str = SAMPLE_DIR
    kld_dir: str | None = KLD_DIR
    full_dir: str | None = None
    then_compare: list[str] = Field(default_factory=list)  # the candidates run fully
    notes: list[str] = Field(default_factory=list)


def write_screen_run(folder: Path, run: ScreenRunFile) -> None:
    """``run.json``, written atomically and last (it releases the folder's claim)."""
    from flipscope.store.run_dir import finish

    folder.mkdir(parents=True, exist_ok=True)
    finish(folder, run.model_dump_json(indent=2))


def read_screen_run(folder: Path) -> ScreenRunFile:
    """A screen directory's ``run.json``; a one-line error where it is missing or malformed."""
    path = folder / "run.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("kind") != "screen":
            raise ValueError("not a screen run")
        if raw.get("schema_version") != SCREEN_SCHEMA:
            raise ValueError(f"schema version {raw.get('schema_version')}, this flipscope reads {SCREEN_SCHEMA}")
        return ScreenRunFile.model_validate(raw)
    except (OSError, ValueError, ValidationError) as exc:
        raise FlipscopeError(
            f"cannot read screen run {folder} ({str(exc).splitlines()[0][:160]})",
            fix="give a folder written by flipscope screen",
        ) from exc
