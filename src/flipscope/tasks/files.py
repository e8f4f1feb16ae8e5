"""User multiple-choice files: JSONL, CSV or Parquet.

Each row needs ``question`` (text), the options and ``answer``. Options: a ``choices`` list (in CSV, a JSON
array), or columns ``A``, ``B``, ... (or ``choice_0``, ``choice_1``, ...). ``answer``: a 0-based index or a
letter. Optional: ``id`` (kept as item id), ``subject`` (used for stratified sampling and prompts).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.tasks.items import LETTERS, MCItem, TaskData
from flipscope.tasks.sampling import stratified_sample

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SCHEMA_FIX = "each row needs question, choices (list) or columns A/B/..., and answer (index or letter); see README"


def _choices(row: dict[str, Any]) -> tuple[str, ...]:
    raw = row.get("choices")
    if isinstance(raw, str):
        raw = json.loads(raw)
    if raw is None:
        for names in (list(LETTERS), [f"choice_{i}" for i in range(len(LETTERS))]):
            cols = [row[n] for n in names if n in row and row[n] not in (None, "")]
            if cols:
                raw = cols
                break
    if raw is None or isinstance(raw, (str, bytes)) or len(list(raw)) < 2:
        raise ValueError("needs at least two choices")
    return tuple(str(choice) for choice in raw)


def _answer(value: Any, n_choices: int) -> int:
    if isinstance(value, str) and value.strip().upper() in LETTERS[:n_choices] and not value.strip().isdigit():
        return LETTERS.index(value.strip().upper())
    index = int(value)
    if not 0 <= index < n_choices:
        raise ValueError(f"answer {value!r} is outside 0..{n_choices - 1}")
    return index


def row_to_item(row: dict[str, Any], line: int) -> MCItem:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing question")
    choices = _choices(row)
    if "answer" not in row or row["answer"] in (None, ""):
        raise ValueError("missing answer")
    item_id = str(row["id"]) if row.get("id") not in (None, "") else str(line)
    subject = str(row.get("subject") or "")
    return MCItem(item_id, question, choices, _answer(row["answer"], len(choices)), subject)


def _rows(path: Path) -> list[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        out = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    out.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise FlipscopeError(f"{path}, line {number}: not valid JSON ({exc.msg})", fix=SCHEMA_FIX) from exc
        return out
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return [(number, row) for number, row in enumerate(csv.DictReader(fh), start=2)]
    import pandas as pd

    frame = pd.read_parquet(path)
    return [(number, row) for number, row in enumerate(frame.to_dict(orient="records"), start=1)]


def load_file(path: Path, *, limit: int | None, seed: int) -> TaskData:
    if not path.exists():
        raise FlipscopeError(f"task file {path} does not exist", fix="check the path given to --tasks")
    if path.suffix.lower() not in SUFFIXES:
        raise FlipscopeError(f"task file {path} has an unknown type", fix=f"use one of {', '.join(SUFFIXES)}")
    items = []
    for number, row in _rows(path):
        try:
            if not isinstance(row, dict):
                raise ValueError("a row must be an object")
            items.append(row_to_item(row, number))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            where = "row" if path.suffix.lower() == ".parquet" else "line"
            raise FlipscopeError(f"{path}, {where} {number}: malformed row ({exc})", fix=SCHEMA_FIX) from exc
    if not items:
        raise FlipscopeError(f"task file {path} has no rows", fix=SCHEMA_FIX)
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        raise FlipscopeError(f"task file {path} repeats an id", fix="give every row a unique id")
    sample = stratified_sample(items, limit, seed=seed)
    meta = {
        "source": f"file:{path.resolve()}",
        "available": len(items),
        "evaluated": len(sample),
        "limit": limit,
    }
    return TaskData(path.stem, sample, {}, meta)
