"""Where a run is written: a folder of its own, never shared with another run and never overwritten silently.

A user's ``--out`` is claimed when the run starts (``check_out``): a lock on ``<out>/.flipscope-run.lock``, held until
the run has written its ``run.json`` (``finish``), so a second run naming the same folder meanwhile is refused at
once; the kernel releases the claim of a killed run, whose folder the next run may then use, and a run that raises
(``releases_out``) lets it go at once, so a failed run in a notebook leaves its folder to the next."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import FileLock, LockHeld, write_atomically

#: The lock file a run holds in its ``--out`` folder while it runs.
CLAIM_FILE = ".flipscope-run.lock"
_claims: dict[Path, FileLock] = {}  # folders this process has claimed, by resolved path
_P = ParamSpec("_P")
_R = TypeVar("_R")


def releases_out(run: Callable[_P, _R]) -> Callable[_P, _R]:
    """``run`` (a function with a keyword-only ``out`` that it claims with ``check_out``) lets that claim go when it
    raises — unless the folder was claimed before it started (by a run around it)."""

    @functools.wraps(run)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        out = kwargs.get("out")
        held_before = out is not None and Path(str(out)).resolve() in _claims
        try:
            return run(*args, **kwargs)
        except BaseException:
            if out is not None and not held_before:
                release(Path(str(out)))
            raise

    return wrapper


def check_out(out: str | Path | None) -> Path | None:
    """A user's ``--out``, checked and claimed before any work: it must not hold anything yet (or only a run killed
    while writing its files), nor be in use by another run."""
    if out is None:
        return None
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise FlipscopeError(
            f"run directory {folder} already exists and is not a folder; a run never overwrites another",
            fix="give another --out",
        )
    _claim(folder)
    if _entries(folder) and not interrupted(folder):
        release(folder)
        raise FlipscopeError(
            f"run directory {folder} already exists and is not empty; a run never overwrites another",
            fix="give another --out, or delete that folder first",
        )
    return folder  # empty, or a run killed while writing its files: written again


def _claim(folder: Path) -> None:
    for held in [f for f in _claims if not f.is_dir()]:  # folders deleted since: nothing left to guard
        _claims.pop(held).release()
    key = folder.resolve()
    if key in _claims:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / CLAIM_FILE, what=f"run directory {folder}")
    try:
        lock.acquire(wait=False)
    except LockHeld as exc:
        raise FlipscopeError(
            f"run directory {folder} is in use by another flipscope run (pid {exc.holder}); two runs never share one",
            fix="give another --out, or wait for that run to finish",
        ) from exc
    _claims[key] = lock


def finish(folder: Path, run_json: str) -> None:
    """Write the run's ``run.json`` — its last file: a run directory with one is complete — and let the folder's
    claim go."""
    write_atomically(folder / "run.json", lambda tmp: tmp.write_text(run_json, encoding="utf-8"))
    release(folder)


def release(folder: Path) -> None:
    """Let another run see ``folder`` (called once its ``run.json`` is written, it then refuses them as a complete
    run; or when the run failed). Nothing where this process holds no claim on it."""
    lock = _claims.pop(folder.resolve(), None)
    if lock is not None:
        lock.release(remove=True)


def _entries(folder: Path) -> list[Path]:
    return [e for e in folder.iterdir() if e.name != CLAIM_FILE]


def interrupted(folder: Path) -> bool:
    """A run directory whose run was killed while writing it: data files or temporary files, no ``run.json``
    (written last, so a folder with it is complete)."""
    entries = _entries(folder)
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
