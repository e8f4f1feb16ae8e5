"""An MT-Bench run directory: ``run.json`` (typed; settings, models, judges, summaries), ``answers.parquet`` (every
model's answer per question and turn, with its teacher-forced numbers on the baseline's answer) and
``judgements.parquet`` (every judge's raw output per item, with the verdict parsed from it). Summaries are
recomputed from the two Parquet files (``summarize``), so a report or a new judge never needs a model loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from flipscope.errors import FlipscopeError
from flipscope.judge import Grade, PairJudgement, parse_pair, parse_rating
from flipscope.metrics import FreeAnswer, ItemScore
from flipscope.plumbing.atomic import write_atomically
from flipscope.store.run_dir import finish

SCHEMA_VERSION = 1
ANSWERS_FILE, JUDGEMENTS_FILE = "answers.parquet", "judgements.parquet"


class MTBenchModel(BaseModel):
    spec: str
    role: str
    fingerprint: str
    parameters: int | None = None


class MTBenchRunFile(BaseModel):
    kind: Literal["mtbench"] = "mtbench"
    schema_version: int = SCHEMA_VERSION
    created: str
    versions: dict[str, str]
    settings: dict[str, Any]
    data_source: str
    questions: list[int]
    baseline: MTBenchModel
    candidates: list[MTBenchModel]
    judges: list[str] = Field(default_factory=list)
    #: per judge: the summaries at the time it judged (recomputed by ``report`` from the Parquet files)
    summary: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def answers_frame(models: list[tuple[str, str, list[ItemScore]]]) -> Any:
    """(spec, role, per question and turn an ItemScore with ``free``) → one row per model, question and turn."""
    import pandas as pd

    rows = []
    for spec, role, scores in models:
        for s in scores:
            f = s.free
            assert f is not None
            qid, turn = s.item_id.rsplit("-", 1)
            rows.append(
                {
                    "model": spec,
                    "role": role,
                    "question_id": int(qid),
                    "category": s.subject,
                    "turn": int(turn),
                    "text": f.text,
                    "stop_reason": f.stop_reason,
                    "new_tokens": f.new_tokens,
                    "token_ids": list(f.token_ids) if f.token_ids is not None else None,
                    "ref_logprob": f.ref_logprob,
                    "ref_tokens": f.ref_tokens,
                    "token_kl": s.token_kl,
                }
            )
    return pd.DataFrame(rows)


def scores_from(answers: Any, model: str) -> list[ItemScore]:
    """One model's rows of ``answers.parquet`` back as ItemScores (question order, turn 1 then 2)."""
    out = []
    for r in answers[answers["model"] == model].itertuples(index=False):
        ids = tuple(int(i) for i in r.token_ids) if r.token_ids is not None else None
        free = FreeAnswer(
            r.text,
            "[invalid]",
            False,
            False,
            r.stop_reason,
            _int(r.new_tokens),
            ids,
            _float(r.ref_logprob),
            _int(r.ref_tokens),
        )
        out.append(ItemScore("mtbench", f"{r.question_id}-{r.turn}", r.category, 0, (), (), _float(r.token_kl), free))
    return out


def _float(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def _int(x: Any) -> int | None:
    return None if x is None or x != x else int(x)


def judgements_frame(grades: list[Grade], pairs: list[PairJudgement]) -> Any:
    import pandas as pd

    rows = [
        {
            "judge": g.judge,
            "mode": "single",
            "model": g.model,
            "question_id": g.question_id,
            "category": g.category,
            "turn": g.turn,
            "prompt": g.prompt,
            "raw": g.raw,
            "raw_swapped": None,
            "score": g.score,
            "verdict": None,
            "verdict_swapped": None,
        }
        for g in grades
    ]
    rows += [
        {
            "judge": p.judge,
            "mode": "pairwise",
            "model": p.candidate,
            "question_id": p.question_id,
            "category": p.category,
            "turn": p.turn,
            "prompt": p.prompt,
            "raw": p.raw_first,
            "raw_swapped": p.raw_second,
            "score": None,
            "verdict": p.first.value if p.first else None,
            "verdict_swapped": p.second.value if p.second else None,
        }
        for p in pairs
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "judge",
            "mode",
            "model",
            "question_id",
            "category",
            "turn",
            "prompt",
            "raw",
            "raw_swapped",
            "score",
            "verdict",
            "verdict_swapped",
        ],
    )


def judgements_from(frame: Any, judge: str) -> tuple[list[Grade], list[PairJudgement]]:
    """One judge's judgements, verdicts parsed again from the raw outputs (a parser fix applies to old runs)."""
    mine = frame[frame["judge"] == judge]
    grades = [
        Grade(judge, r.model, int(r.question_id), r.category, int(r.turn), r.prompt, r.raw, parse_rating(r.raw))
        for r in mine[mine["mode"] == "single"].itertuples(index=False)
    ]
    pairs = [
        PairJudgement(
            judge,
            r.model,
            int(r.question_id),
            r.category,
            int(r.turn),
            r.prompt,
            r.raw,
            r.raw_swapped,
            parse_pair(r.raw),
            parse_pair(r.raw_swapped),
        )
        for r in mine[mine["mode"] == "pairwise"].itertuples(index=False)
    ]
    return grades, pairs


def write(folder: Path, run: MTBenchRunFile, answers: Any | None = None, judgements: Any | None = None) -> None:
    """Each file written to a temporary name and renamed into place; ``run.json`` last."""
    if answers is not None:
        write_atomically(folder / ANSWERS_FILE, lambda tmp: answers.to_parquet(tmp, index=False))
    if judgements is not None:
        write_atomically(folder / JUDGEMENTS_FILE, lambda tmp: judgements.to_parquet(tmp, index=False))
    finish(folder, run.model_dump_json(indent=2))


def is_mtbench(folder: Path) -> bool:
    try:
        return json.loads((folder / "run.json").read_text(encoding="utf-8")).get("kind") == "mtbench"
    except (OSError, ValueError, AttributeError):
        return False


def read(folder: Path) -> tuple[MTBenchRunFile, Any, Any]:
    """run.json, answers and judgements of an MT-Bench run directory; a clear error where one is missing or bad."""
    import pandas as pd

    run = _read_run_file(folder)
    frames = []
    for name in (ANSWERS_FILE, JUDGEMENTS_FILE):
        try:
            frames.append(pd.read_parquet(folder / name))
        except (OSError, ValueError) as exc:
            raise FlipscopeError(
                f"{folder / name}: unreadable ({_one_line(exc)})", fix="run `flipscope mtbench` again into a new folder"
            ) from exc
    return run, frames[0], frames[1]


def _read_run_file(folder: Path) -> MTBenchRunFile:
    """The run file of an MT-Bench run directory; for any other folder one line saying what it holds instead."""
    fix = "give the folder `flipscope mtbench` wrote"
    expected = 'a run.json with "kind": "mtbench"'
    path = folder / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FlipscopeError(
            f"{folder} is not an MT-Bench run: it has no run.json (expected {expected})", fix=fix
        ) from exc
    except (OSError, ValueError) as exc:
        raise FlipscopeError(
            f"{folder} is not an MT-Bench run: its run.json is not readable JSON ({_one_line(exc)})", fix=fix
        ) from exc
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind != "mtbench":
        if not isinstance(data, dict):
            found = "no JSON object"
        else:
            found = f'"kind": {json.dumps(kind)[:40]}' if "kind" in data else 'no "kind"'
        raise FlipscopeError(
            f"{folder} is not an MT-Bench run: its run.json has {found} (expected {expected})", fix=fix
        )
    try:
        return MTBenchRunFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "its top level"
        raise FlipscopeError(
            f"{path}: an MT-Bench run file with {exc.error_count()} bad field(s), the first {where!r}: "
            f"{_one_line(first['msg'])}",
            fix="run `flipscope mtbench` again into a new folder",
        ) from exc


def _one_line(message: object, limit: int = 160) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
