"""A plot as data: its kind, series and labels (``Plot``), and the naming helpers every plot family uses.
``plots`` (compare runs) and ``run_plots`` (kld, mtbench, attribution) build them; ``render`` draws them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class PlotKind(StrEnum):
    BAR = "bar"  # grouped bars: series share the x categories
    SCATTER = "scatter"  # labelled points
    LINE = "line"


@dataclass(frozen=True)
class Series:
    name: str
    x: list[float | str]
    y: list[float | None]
    text: list[str] = field(default_factory=list)  # per point: a label (scatter) or hover text
    colour: str | None = None  # one colour per model across the whole report (``all_plots``)


@dataclass(frozen=True)
class Plot:
    key: str  # file name stem of its PNG, element id in the HTML
    title: str
    caption: str
    kind: PlotKind
    x_label: str
    y_label: str
    series: list[Series]
    log_x: bool = False
    hline: tuple[float, str] | None = None  # a reference level and its label (the noise floor)
    section: str = "compare"  # the report section it belongs to: compare, kld, mtbench


def short(spec: str, baseline: str) -> str:
    """A candidate's name without the baseline's spec it extends ("+rtn:w8")."""
    return spec[len(baseline) :] if spec.startswith(baseline + "+") else spec


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def rho_label(value: float | None) -> str:
    return "n/a (fewer than 2 candidates with numbers)" if value is None else f"{value:+.2f}"
