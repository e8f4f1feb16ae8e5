"""Reading a judge's verdict out of its text, as FastChat's prompts ask for it: ``[[rating]]`` (1–10) for single
grading, ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (tie) for pairwise.

Stricter than FastChat where a verdict is ambiguous: FastChat takes the first rating, and prefers A over B over C
whatever the order; here several *different* verdicts in one output make it unparseable (counted and shown, never
guessed). A repeated identical verdict is accepted. A rating outside 1–10 is unparseable."""

from __future__ import annotations

import re
from enum import StrEnum

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")  # FastChat's fallback: "[7]"
_PAIR = re.compile(r"\[\[([ABC])\]\]")


class Winner(StrEnum):
    """A pairwise verdict as the judge gives it: the answer shown first (A), second (B), or a tie (C)."""

    A = "A"
    B = "B"
    TIE = "C"


def parse_rating(text: str) -> float | None:
    """The judge's 1–10 rating, or None (no rating, several different ones, or out of range)."""
    found = {float(m) for m in _RATING.findall(text)} or {float(m) for m in _RATING_BACKUP.findall(text)}
    if len(found) != 1:
        return None
    (rating,) = found
    return rating if 1.0 <= rating <= 10.0 else None


def parse_pair(text: str) -> Winner | None:
    """The judge's pairwise verdict, or None (none, or several different ones)."""
    found = set(_PAIR.findall(text))
    return Winner(found.pop()) if len(found) == 1 else None
