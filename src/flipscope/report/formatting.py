"""Number formatting shared by every view of a run."""

from __future__ import annotations

import math


def pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def points(mean: float | None, err: float | None, *, signed: bool = False) -> str:
    """A share and its standard error in percentage points, "12.5 ± 3.1"; an error that cannot be estimated (one
    item: NaN, stored as null) shows as "—"."""
    spread = "—" if err is None or math.isnan(err) else pct(err)
    return f"{pct(mean, signed=signed)} ± {spread}"


def num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def pvalue(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
