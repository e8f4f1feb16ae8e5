"""A report's warnings grouped by kind: one line per kind naming its cases (candidate · task), the full messages
kept for whoever unfolds the line. A baseline's warning, repeated under every candidate, is one case (its task)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flipscope.report.collect import ReportInput
from flipscope.report.figure import short

#: (kind, pattern): the warnings ``metrics.summary`` writes, by what they say; others are grouped by their text with
#: the numbers taken out.
KINDS = (
    ("baseline answers collapse onto one option (flips there mean little)", re.compile(r"^baseline picked option")),
    ("candidate answers collapse onto one option (flips there mean little)", re.compile(r"^candidate picked option")),
    ("items left out: NaN or infinite log-probabilities", re.compile(r"NaN or infinite")),
    ("token KL missing on some items", re.compile(r"^token KL missing")),
    ("teacher-forced distances on part of the items", re.compile(r"^teacher-forced distances .* measured on")),
    ("teacher-forced KL measured on no item", re.compile(r"^teacher-forced KL measured on no item")),
    ("no judge-free distances", re.compile(r"^no judge-free distances")),
)


@dataclass(frozen=True)
class WarningGroup:
    kind: str
    cases: list[str]  # "candidate · task", or "task" for a baseline's warning, or a run note's task
    messages: list[str]  # every distinct message, with its case

    def line(self) -> str:
        return f"{self.kind} ({len(self.cases)}): {', '.join(self.cases)}"


def warning_kind(message: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(message):
            return kind
    return re.sub(r"\d+(\.\d+)?", "#", message)


def grouped_warnings(data: ReportInput) -> list[WarningGroup]:
    """Every compare run's per-task warnings and notes, grouped by kind, in the order kinds first appear."""
    found: dict[str, dict[str, str]] = {}  # kind → case → message
    for run in data.compares:
        candidates = len(run.run.summary)
        seen: dict[tuple[str, str], list[str]] = {}  # (task, message) → candidates that carry it
        for candidate, per_task in run.run.summary.items():
            for task, s in per_task.items():
                for message in s.warnings:
                    seen.setdefault((task, message), []).append(short(candidate, data.baseline))
        for (task, message), who in seen.items():
            shared = message.startswith("baseline") and len(who) == candidates  # the same baseline under each
            cases = [task] if shared else [f"{c} · {task}" for c in who]
            for case in cases:
                found.setdefault(warning_kind(message), {})[case] = message
        for note in run.run.notes:
            task, _, _ = note.partition(":")
            found.setdefault("notes on the tasks", {})[task if task != note else note[:40]] = note
    return [WarningGroup(kind, list(cases), [f"{case}: {m}" for case, m in cases.items()])
            for kind, cases in found.items()]  # fmt: skip
