"""The run directory of `flipscope attribute`: ``run.json`` (typed) and ``units.parquet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from flipscope.errors import FlipscopeError

ATTRIBUTE_SCHEMA = 1


class UnitResult(BaseModel):
    unit: str
    linears: int
    params: int
    kl_only: float  # corpus KL with only this unit compressed
    kl_without: float  # corpus KL with everything but this unit compressed
    explained: float  # the candidate's KL minus kl_without: what restoring this unit removes
    flips_without: int | None = None  # the candidate's flips (all tasks) with this unit restored
    flips_restored: int | None = None  # the candidate's flips minus flips_without


class TaskFlips(BaseModel):
    n: int
    c2i: int
    i2c: int


class AttributionRun(BaseModel):
    kind: Literal["attribute"] = "attribute"
    schema_version: int = ATTRIBUTE_SCHEMA
    created: str
    versions: dict[str, str]
    baseline: str
    candidate: str
    by: str
    settings: dict[str, Any]
    candidate_kl: float
    sum_single_kl: float  # Σ kl_only: equals candidate_kl where the units' effects add up
    flips: dict[str, TaskFlips] = Field(default_factory=dict)
    units: list[UnitResult]  # ranked: the most KL explained first
    seconds: float
    notes: list[str] = Field(default_factory=list)

    def top_share(self, k: int) -> float:
        """Share of the candidate's KL removed by restoring the top-k units one at a time (summed)."""
        return sum(u.explained for u in self.units[:k]) / self.candidate_kl if self.candidate_kl > 0 else 0.0

    def flips_share(self, k: int) -> float | None:
        total = sum(f.c2i + f.i2c for f in self.flips.values())
        restored = [u.flips_restored for u in self.units[:k] if u.flips_restored is not None]
        return sum(restored) / total if total and restored else None


def write_attribution(folder: Path, run: AttributionRun) -> None:
    import pandas as pd

    from flipscope.plumbing.atomic import write_atomically
    from flipscope.store.run_dir import finish

    folder.mkdir(parents=True, exist_ok=True)
    units = pd.DataFrame([u.model_dump() for u in run.units])
    write_atomically(folder / "units.parquet", lambda tmp: units.to_parquet(tmp, index=False))
    finish(folder, run.model_dump_json(indent=2))  # last: a folder with run.json is complete


def is_attribution(folder: Path) -> bool:
    try:
        return json.loads((folder / "run.json").read_text(encoding="utf-8")).get("kind") == "attribute"
    except (OSError, ValueError, AttributeError):
        return False


def read_attribution(folder: Path) -> AttributionRun:
    try:
        return AttributionRun.model_validate_json((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError) as exc:
        raise FlipscopeError(
            f"{folder / 'run.json'}: not a readable attribution run ({str(exc)[:160]})",
            fix="give the folder `flipscope attribute` wrote",
        ) from exc
