"""The one display layer: progress bars for long work. Library code reports through it, never prints."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class Display(Protocol):
    def progress(self, description: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        """A context manager yielding ``advance(n)``."""
        ...


class NullDisplay:
    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n: None


class RichDisplay:
    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        if not self.console.is_terminal:
            self.console = Console(stderr=True, width=120)  # logs and pipes: keep descriptions whole
        self.lock = threading.Lock()
        self.bar: Any = None  # the live bars while any is open
        self.open = 0

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        with self.lock:  # bars open at once (models on Ray, each in a thread) share one live display
            if self.bar is None:
                self.bar = Progress(*columns, console=self.console, transient=False)
                self.bar.start()
            bar = self.bar
            self.open += 1
            task = bar.add_task(description, total=total)
        try:
            yield lambda n: bar.advance(task, n)
        finally:
            with self.lock:
                self.open -= 1
                if not self.open:
                    bar.stop()
                    self.bar = None
