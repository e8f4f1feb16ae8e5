"""Number formatting shared by every view of a run."""

from __future__ import annotations


def pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def pvalue(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
