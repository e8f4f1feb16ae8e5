"""Paired differences of two candidates' per-position values on the same corpus windows, with an error bar that
counts windows — the independent units — not positions: positions of one window share their context and move
together, so a standard error over positions is several times too small."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowDifference:
    """``a − b``: the mean over windows of each window's mean difference, its standard error over windows, and in
    how many windows ``a``'s mean is the lower."""

    mean: float
    err: float  # standard error over windows (NaN with one window)
    lower: int
    windows: int

    def describe(self) -> str:
        return f"{self.mean:+.4f} ± {self.err:.4f} (lower in {self.lower} of {self.windows} windows)"


def window_means(windows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window ids in ascending order, the mean of ``values`` over each window's positions)."""
    ids, inverse = np.unique(windows, return_inverse=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64), minlength=ids.size)
    return ids, sums / np.bincount(inverse, minlength=ids.size)


@dataclass(frozen=True)
class WindowMean:
    """The mean over windows of each window's mean, and its standard error over windows (NaN with one window)."""

    mean: float
    err: float
    windows: int


def mean_by_window(windows: np.ndarray, values: np.ndarray) -> tuple[WindowMean, np.ndarray]:
    """``values`` [n] over positions, ``windows`` [n] their windows: the mean with its error bar by window, and
    the per-window means. NaN or infinite values are refused (a window left out would change what is measured)."""
    if windows.shape != values.shape:
        raise ValueError(f"windows {windows.shape} and values {values.shape} differ in shape")
    if not np.isfinite(values.astype(np.float64)).all():
        bad = np.unique(windows[~np.isfinite(values.astype(np.float64))])
        raise ValueError(f"NaN or infinite values in window(s) {', '.join(str(int(w)) for w in bad)}")
    _, per = window_means(windows, values)
    n = int(per.size)
    err = float(per.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return WindowMean(float(per.mean()), err, n), per


def paired_by_window(windows: np.ndarray, a: np.ndarray, b: np.ndarray) -> WindowDifference:
    """``a − b`` paired by window; ``windows``, ``a``, ``b``: [n] over the same positions (a per-window value is a
    window of one position). NaN or infinite values are refused."""
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape}, {b.shape}")
    got, per = mean_by_window(windows, a.astype(np.float64) - b.astype(np.float64))
    return WindowDifference(mean=got.mean, err=got.err, lower=int((per < 0).sum()), windows=got.windows)
