"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class FlipscopeError(Exception):
    """An error caused by the user's input or environment, shown without a traceback.

    ``problem`` says what is wrong, naming the input; ``fix`` says what to do about it.
    """

    def __init__(self, problem: str, *, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem
