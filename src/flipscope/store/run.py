"""The run directory: ``run.json`` (typed, versioned), per-item ``records.parquet`` / ``items.parquet``, and with
``compare --samples`` every sampled answer in ``draws.parquet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, TaskSummary
from flipscope.store.passes import greedy_cells

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
RECORDS_FILE = "records.parquet"
ITEMS_FILE = "items.parquet"
DRAWS_FILE = "draws.parquet"


class ModelEntry(BaseModel):
    spec: str
    role: str  # "baseline" or "candidate"
    fingerprint: str
    tokenizer_fingerprint: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    passes: dict[str, str] = Field(default_factory=dict)  # task → pass cache key
    reused: dict[str, bool] = Field(default_factory=dict)  # task → loaded from cache instead of run
    chunk_passes: dict[str, list[str]] = Field(default_factory=dict)  # compare --sequential: task → its chunks' keys


class TaskEntry(BaseModel):
    name: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Settings(BaseModel):
    format: str
    fewshot: int
    limit: int | None
    seed: int
    topk: int
    tail_samples: int
    device: str
    dtype: str
    batch_size: int = 16
    sequential: dict[str, Any] | None = None  # compare --sequential: the SequentialPlan's fields


class NoiseFloorEntry(BaseModel):
    """The baseline run again under ``setup`` (e.g. "batch 16 → 1"), paired with the baseline."""

    setup: str
    batch_size: int
    dtype: str
    model: ModelEntry
    summary: dict[str, TaskSummary]


class SamplingEntry(BaseModel):
    """``compare --samples``: K seeded draws per item and model at each task's temperature (``metrics.sampling``);
    ``seeds``: each side's seeds; ``floor[task]``: the baseline's flips between its two sides (share of items per
    draw, ± SE over items); ``summary[candidate][task]``: ``SampledSummary``'s fields."""

    samples: int
    temperatures: dict[str, float]
    seeds: dict[str, list[int]]
    floor: dict[str, dict[str, Any]] = Field(default_factory=dict)
    summary: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class RunFile(BaseModel):
    schema_version: int = SCHEMA_VERSION
    created: str
    flipscope_version: str
    versions: dict[str, str]
    settings: Settings
    baseline: ModelEntry
    candidates: list[ModelEntry]
    tasks: list[TaskEntry]
    #: summary[candidate spec][task name]; with several tasks, also an "all" entry pooling their items.
    summary: dict[str, dict[str, TaskSummary]]
    noise_floor: NoiseFloorEntry | None = None
    sampling: SamplingEntry | None = None
    notes: list[str] = Field(default_factory=list)


def _free_columns(score: ItemScore, base: ItemScore | None) -> dict[str, Any]:
    """Free-form items: the output, its extracted answer and stop, and (candidates) the judge-free distances."""
    from dataclasses import asdict

    from flipscope.metrics import Pair, answer_distance
    from flipscope.metrics.degradation import answer_degradation

    f = score.free
    if f is None:
        return {}
    out = {"output": f.text, "answer": f.answer, "correct_strict": f.correct_strict, "stop_reason": f.stop_reason,
           "new_tokens": f.new_tokens, "ref_logprob": f.ref_logprob, "ref_tokens": f.ref_tokens,
           "output_token_ids": list(f.token_ids) if f.token_ids is not None else None, "found": f.found}  # fmt: skip
    if base is not None and base.free is not None:
        out.update(asdict(answer_degradation(f, base.free)))
    d = answer_distance(Pair(base, score)) if base is not None and base is not score else None
    if d is not None:
        out.update(teacher_kl=d.teacher_kl, delta_nll=d.delta_nll, first_divergence=d.first_divergence,
                   identical=d.identical, same_answer=d.same_answer)  # fmt: skip
    return out


def records_frame(scores: dict[str, tuple[str, list[ItemScore]]]) -> Any:
    """One row per (model, item): ``scores[spec] = (role, items)``."""
    import pandas as pd

    rows = []
    base = {(s.task, s.item_id): s for role, items in scores.values() if role == "baseline" for s in items}
    for spec, (role, items) in scores.items():
        for s in items:
            rows.append(
                {
                    "task": s.task,
                    "item_id": s.item_id,
                    "subject": s.subject,
                    "model": spec,
                    "role": role,
                    "target": s.target,
                    "choice": s.choice,
                    "correct": s.correct,
                    "choice_norm": s.choice_norm,
                    "correct_norm": s.correct_norm,
                    "choice_logprobs": list(s.logprobs),
                    "option_chars": list(s.option_chars),
                    "token_kl": s.token_kl,
                    **greedy_cells(s),
                    **_free_columns(s, base.get((s.task, s.item_id))),
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["token_kl"] = frame["token_kl"].astype("Float64")
    return frame


def write_run(folder: Path, run: RunFile, records: Any, items: Any, *, draws: Any = None) -> None:
    """Each file written under a temporary name and renamed into place, ``run.json`` last: a run directory with a
    ``run.json`` is complete. ``draws``: the sampled answers' frame (``compare --samples``)."""
    from flipscope.plumbing.atomic import write_atomically
    from flipscope.store.run_dir import finish

    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / RECORDS_FILE, lambda tmp: records.to_parquet(tmp, index=False))
    write_atomically(folder / ITEMS_FILE, lambda tmp: items.to_parquet(tmp, index=False))
    if draws is not None:
        write_atomically(folder / DRAWS_FILE, lambda tmp: draws.to_parquet(tmp, index=False))
    finish(folder, run.model_dump_json(indent=2))


def read_run(folder: Path) -> tuple[RunFile, Any]:
    """Load ``run.json`` and ``records.parquet``; a clear error for a missing or malformed run directory."""
    import pandas as pd

    run_path, rec_path = folder / RUN_FILE, folder / RECORDS_FILE
    if not run_path.exists() or not rec_path.exists():
        raise FlipscopeError(
            f"{folder} is not a flipscope run directory (needs {RUN_FILE} and {RECORDS_FILE})",
            fix="give the --out folder of a `flipscope compare` run",
        )
    try:
        raw = json.loads(run_path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FlipscopeError(
                f"{run_path} has schema version {version}; this flipscope reads version {SCHEMA_VERSION}",
                fix="re-run `flipscope compare` with this version",
            )
        run = RunFile.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise FlipscopeError(
            f"{run_path} is malformed ({str(exc).splitlines()[0]})", fix="re-run the comparison"
        ) from exc
    try:
        return run, pd.read_parquet(rec_path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FlipscopeError(
            f"{rec_path} is unreadable ({str(exc).splitlines()[0][:160]})", fix="re-run the comparison"
        ) from exc


def read_draws(folder: Path) -> Any:
    """``draws.parquet`` of a ``compare --samples`` run (None where the run did not sample)."""
    import pandas as pd

    path = folder / DRAWS_FILE
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise FlipscopeError(
            f"{path} is unreadable ({str(exc).splitlines()[0][:160]})", fix="re-run the comparison"
        ) from exc
