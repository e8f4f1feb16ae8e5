"""Where a run is written: a folder of its own, never shared with another run and never overwritten silently."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flipscope.errors import FlipscopeError


def check_out(out: str | Path | None) -> Path | None:
    """A user's ``--out``, checked before any work: it must not hold anything yet."""
    if out is None:
        return None
    folder = Path(out)
    if folder.is_dir() and interrupted(folder):
        return folder  # a run killed while writing its files: written again
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FlipscopeError(
            f"run directory {folder} already exists and is not empty; a run never overwrites another",
            fix="give another --out, or delete that folder first",
        )
    return folder


def interrupted(folder: Path) -> bool:
    """A run directory whose run was killed while writing it: data files or temporary files, no ``run.json``
    (written last, so a folder with it is complete)."""
    entries = list(folder.iterdir())
    return (
        bool(entries)
        and not (folder / "run.json").exists()
        and all(e.is_file() and e.suffix in (".parquet", ".part") for e in entries)
    )


def claim_run_dir(out: str | Path | None, *, prefix: str = "") -> Path:
    """Create the run's folder: ``out`` (empty or new), else ``runs/<prefix><timestamp>``, with ``-2``, ``-3`` …
    added where another run took that name in the same second (creation is atomic, so two runs never share it)."""
    folder = check_out(out)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    stem = Path("runs") / (prefix + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    stem.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = stem if n == 1 else stem.with_name(f"{stem.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FlipscopeError(f"cannot create a run directory next to {stem}", fix="give --out")
