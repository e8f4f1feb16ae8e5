"""Single-unit sensitivities, shared by ``advise`` (RTN widths) and ``advise gguf:`` (llama.cpp types): each unit
with only it at one candidate (a weight-bank version), measured on the calibration windows, as knapsack options.
A candidate whose KL is NaN or infinite on any window is refused for that unit (logged and recorded, never given a
mean over the windows left); measurements already made are not made again: ``cache`` (a file named by everything
that makes them, ``cache_file``) is read first and written after each unit, so a second budget re-measures nothing
and a killed run resumes."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flipscope.attribution.ablate import WeightBank, WindowKL
from flipscope.attribution.knapsack import Option
from flipscope.attribution.units import Unit
from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    label: str  # how the table, the refusals and ``known`` name it ("w4g64", "Q4_K")
    version: str  # the weight-bank version it swaps into the unit
    cost: float  # bits it stores for the unit


@dataclass
class Sensitivities:
    options: list[list[Option]] = field(default_factory=list)  # [unit] → (cost, KL) of each finite candidate
    offered: list[list[str]] = field(default_factory=list)  # [unit] → the version of each option
    table: dict[str, dict[str, float | None]] = field(default_factory=dict)  # unit → label → KL (None: refused)
    refused: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # unit → label → non-finite windows
    known: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # unit → label → {"kl", "bad"}


#: Bumped when what a cached sensitivity means changes.
CACHE_FORMAT = 1


def cache_file(kind: str, key: dict[str, Any]) -> Path:
    """Where the sensitivities measured under ``key`` (everything that makes them: the model, its candidates, the
    units, the windows, the libraries) are kept, in the flipscope cache's ``advise-<kind>`` folder."""
    from flipscope.plumbing.cache import cache_root

    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True, default=str).encode())
    folder = cache_root() / f"advise-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest.hexdigest()[:24]}.json"


def read_known(cache: Path | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Sensitivities kept by an earlier run ({} where there are none, or the file cannot be read: measured again,
    and written anew)."""
    if cache is None or not cache.exists():
        return {}
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): measuring again", cache, exc)
        return {}
    return known if isinstance(known, dict) else {}


def single_unit(units: Sequence[Unit], candidates: Callable[[Unit], list[Candidate]], bank: WeightBank,
                meter: Callable[[], WindowKL], shown: Display, *, fix: str,
                cache: Path | None = None) -> Sensitivities:  # fmt: skip
    """Every unit at each of its candidates alone; ``fix`` is said when a unit has no finite candidate."""
    out = Sensitivities(known=read_known(cache))
    offers = {unit.name: candidates(unit) for unit in units}
    todo = sum(c.label not in out.known.get(u, {}) for u, cs in offers.items() for c in cs)
    with shown.progress("sensitivities", todo) as advance:
        for unit in units:
            seen = out.known.setdefault(unit.name, {})
            row, kept, out.table[unit.name] = [], [], {}
            for c in offers[unit.name]:
                if c.label not in seen:
                    bank.use(dict.fromkeys(unit.linears, c.version))
                    got = meter()
                    advance(1)
                    seen[c.label] = {"kl": None if got.bad else got.mean, "bad": got.bad}
                    if cache is not None:  # after each measurement: a killed run loses at most one
                        write_atomically(cache, functools.partial(Path.write_text, data=json.dumps(out.known)))
                kl, bad = seen[c.label]["kl"], list(seen[c.label]["bad"])
                out.table[unit.name][c.label] = kl
                if bad or kl is None:
                    log.warning("%s at %s: NaN or infinite KL in calibration window%s %s; refused", unit.name, c.label,
                                "s" if len(bad) > 1 else "", ", ".join(map(str, bad)))  # fmt: skip
                    out.refused.setdefault(unit.name, {})[c.label] = bad
                    continue
                row.append(Option(c.cost, float(kl)))
                kept.append(c.version)
            if not row:
                raise FlipscopeError(f"every candidate of {unit.name} gives NaN or infinite KL on the calibration "
                                     "windows", fix=fix)  # fmt: skip
            out.options.append(row)
            out.offered.append(kept)
    return out
