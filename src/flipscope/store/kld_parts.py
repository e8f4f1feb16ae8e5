"""A `kld` candidate's per-position columns, kept as they are computed, so that a killed run resumes inside a
candidate's pass and a finished candidate is not measured again.

Layout: one folder per (baseline store, candidate, batch settings); in it one ``<first>-<end>.npz`` per stretch of
windows [first, end), written by ``write_atomically`` (flushed to disk, then renamed: a stretch is whole or
absent). Reading back takes the stretches in order from window 0 and stops at a gap or an unreadable file (the
rest is computed again), skipping stretches that start inside those already read (`kld` and `kld --ray` may cut
stretches differently), so the columns read back equal an uninterrupted run's."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from flipscope.plumbing.atomic import write_atomically

log = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]  # column → [positions]


class PositionParts:
    """The stretches of one candidate's columns; ``folder`` None keeps nothing (``--no-cache``)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def resume(self) -> tuple[int, list[Columns]]:
        """(windows done, their columns in stretches) — the contiguous run of stretches from window 0."""
        if self.folder is None or not self.folder.is_dir():
            return 0, []
        spans = []
        for path in self.folder.glob("*.npz"):
            head, _, tail = path.stem.partition("-")
            if head.isdigit() and tail.isdigit():
                spans.append((int(head), int(tail), path))
        done, parts = 0, []
        for first, end, path in sorted(spans):
            if first < done:
                continue  # within stretches already read (runs that cut stretches differently wrote both)
            if first != done:
                break
            try:
                with np.load(path) as data:
                    parts.append({name: data[name] for name in data.files})
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                log.warning("kld: stored stretch %s is unreadable (%s); computing it again", path, exc)
                break
            done = end
        return done, parts

    def save(self, first: int, end: int, cols: Columns) -> None:
        """Store the columns of windows [first, end)."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: savez would add ".npz" to the temporary name
                np.savez(handle, allow_pickle=False, **cols)

        write_atomically(self.folder / f"{first:08d}-{end:08d}.npz", write)
