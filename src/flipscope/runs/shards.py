"""Scheduler shards: a comparison cut into parts that jobs of a Slurm or Kubernetes array run one each, into one
shared pass cache; a last ``compare`` without a shard, over that cache, then finds every pass made and assembles the
whole run (no model is loaded).

``--shard i/N`` (0 ≤ i < N) runs the baseline's passes and the candidates k (in the order given) with k mod N = i;
``--shard baseline`` runs the baseline's passes alone — a first job the array waits for, so that N jobs starting at
once do not each score the baseline (they would all be right: the first pass stored is the one every job then reads,
but the work would be done N times). The noise floor, when asked for, is one more part after the candidates; in a
sequential run every shard needs it (each candidate's decision is against its interval): ``--shard baseline`` then
runs the floor (and the baseline chunks it needs) once, ahead of the array, and the candidates' shards read it from
the cache. A shard never runs with ``--no-cache``: N jobs would each replace the same baseline passes.

Passes are content-addressed, written under a lock file (``fcntl.flock``) to a temporary name in the cache folder
and renamed into place (``plumbing.atomic``), so jobs on several machines may share one cache folder on a file
system where ``flock`` holds across machines and a rename within a folder is atomic: NFSv4, Lustre mounted with
``-o flock``, GPFS / Spectrum Scale, CephFS; not NFSv3 without a lock manager, nor object-store (FUSE) mounts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from flipscope.errors import FlipscopeError

T = TypeVar("T")

_PART = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_FIX = "use --shard i/N with 0 ≤ i < N (e.g. --shard $SLURM_ARRAY_TASK_ID/10), or --shard baseline"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (``index`` None: the baseline alone)."""

    index: int | None
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or (self.index is not None and not 0 <= self.index < self.count):
            raise FlipscopeError(f"shard {self.index}/{self.count}: the part must be 0 … N−1 of N ≥ 1 parts", fix=_FIX)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """ "i/N" or "baseline"; anything else, or i out of range, is a one-line error."""
        if text.strip().lower() == "baseline":
            return cls(None, 1)
        match = _PART.match(text)
        if match is None:
            raise FlipscopeError(f"--shard {text!r} is not i/N or 'baseline'", fix=_FIX)
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise FlipscopeError(f"--shard {text!r}: the part must be 0 … N−1 of N ≥ 1 parts", fix=_FIX)
        return cls(index, count)

    @classmethod
    def of(cls, value: Shard | str) -> Shard:
        """A shard as the API takes it: a Shard, or its text ("1/4", "baseline")."""
        return value if isinstance(value, Shard) else cls.parse(value)

    def __str__(self) -> str:
        return "baseline" if self.index is None else f"{self.index}/{self.count}"

    def candidates(self, specs: Sequence[T]) -> list[T]:
        """The candidates this part runs: those at positions k ≡ index (mod count); none for the baseline's part."""
        if self.index is None:
            return []
        return [s for k, s in enumerate(specs) if k % self.count == self.index]

    def runs_floor(self, candidates: int, *, sequential: bool) -> bool:
        """Whether this part runs the noise floor: the part after the last candidate's (position ``candidates``);
        in a sequential run every part, the baseline's among them (each candidate's decisions are taken against the
        floor; a baseline part run first makes it once, before the array)."""
        if sequential:
            return True
        return self.index is not None and candidates % self.count == self.index

    def note(self, labels: Sequence[str], *, floor: bool) -> str:
        """What this part ran, and how the whole run is assembled (a line of run.json's notes)."""
        ran = ", ".join(labels) if labels else "no candidate"
        what = (
            "the baseline alone"
            if self.index is None
            else f"the baseline and {ran}" + (" and the noise floor" if floor else "")
        )
        return (
            f"shard {self}: this run holds {what}, not the whole comparison; run the same compare without --shard "
            "over the same --cache-dir once every shard has finished: it reads every pass from the cache"
        )
