"""Stored generations, resumable inside a pass: a generation pass writes its outputs in chunks, each chunk a JSON
Lines file written to a ``.part`` name and renamed when complete (``write_atomically``), so a killed run leaves
only whole chunks; a restarted run reads them, generates the rest, and writes ``complete.json`` (the same way) at the
end. A
chunk that cannot be read (truncated, edited) is an error naming the file, never silently regenerated or skipped.

Layout: ``<cache>/generations/<key>/chunk-00000.jsonl`` … and ``complete.json`` (how many answers)."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models.base import Generation, StopReason
from flipscope.plumbing.atomic import exclusive, write_atomically


def _to_row(index: int, g: Generation) -> dict[str, Any]:
    return {"index": index, **asdict(g), "stop_reason": g.stop_reason.value}


def _from_row(row: dict[str, Any]) -> tuple[int, Generation]:
    ids = row.get("token_ids")
    return int(row["index"]), Generation(
        text=str(row["text"]),
        stop_reason=StopReason(row["stop_reason"]),
        prompt_tokens=row.get("prompt_tokens"),
        new_tokens=row.get("new_tokens"),
        token_ids=tuple(int(i) for i in ids) if ids is not None else None,
    )


class GenerationStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, key: str) -> Path:
        return self.root / key

    def _read(self, folder: Path) -> dict[int, Generation]:
        done: dict[int, Generation] = {}
        for chunk in sorted(folder.glob("chunk-*.jsonl")):
            for number, line in enumerate(chunk.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    index, generation = _from_row(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise FlipscopeError(
                        f"stored generations {chunk}, line {number}: unreadable ({exc})",
                        fix=f"delete {folder} to generate this pass again",
                    ) from exc
                done[index] = generation
        return done

    def run(
        self,
        key: str,
        n: int,
        generate: Callable[[Sequence[int]], list[Generation]],
        *,
        chunk: int = 32,
        use_cache: bool = True,
    ) -> tuple[list[Generation], bool]:
        """All ``n`` generations of pass ``key`` (and whether all came from the store): the stored ones, then
        ``generate(indices)`` for the rest, ``chunk`` at a time, each chunk stored before the next starts."""
        folder = self.folder(key)
        with exclusive(folder, what=f"the generations of pass {key}"):  # a second process waits, then reads them
            return self._run(folder, n, generate, chunk=chunk, use_cache=use_cache)

    def _run(
        self,
        folder: Path,
        n: int,
        generate: Callable[[Sequence[int]], list[Generation]],
        *,
        chunk: int,
        use_cache: bool,
    ) -> tuple[list[Generation], bool]:
        if not use_cache:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        done = self._read(folder)
        todo = [i for i in range(n) if i not in done]
        for start in range(0, len(todo), chunk):
            indices = todo[start : start + chunk]
            made = generate(indices)
            name = folder / f"chunk-{len(list(folder.glob('chunk-*.jsonl'))):05d}.jsonl"
            text = "".join(json.dumps(_to_row(i, g)) + "\n" for i, g in zip(indices, made, strict=True))
            write_atomically(name, functools.partial(Path.write_text, data=text))
            done.update(zip(indices, made, strict=True))
        write_atomically(folder / "complete.json", functools.partial(Path.write_text, data=json.dumps({"n": n})))
        return [done[i] for i in range(n)], not todo
