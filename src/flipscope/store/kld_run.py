"""The run directory of `flipscope kld`: ``run.json`` (typed, versioned) and ``positions.parquet``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import AliasChoices, BaseModel, Field, model_validator

from flipscope.errors import FlipscopeError
from flipscope.metrics.corpus_stats import CorpusSummary, finite_windows, summarize_corpus

KLD_SCHEMA_VERSION = 1
POSITION_COLUMNS = ("kl", "kl_reverse", "logp_base", "logp_cand", "top_logp_base", "agree")


class KLDRunSettings(BaseModel):
    corpus: str
    corpus_sha256: str
    corpus_tokens: int
    ctx: int
    scored_fraction: float
    windows: int
    positions: int
    store: str  # live | full | compact ("exact" in runs written before the full store had its name)
    full_code: str | None = Field(default=None, validation_alias=AliasChoices("full_code", "exact_code"))
    topk: int | None = None
    tail_samples: int | None = None
    device: str
    dtype: str
    #: How the numbers were obtained: KL(B‖C) "exact" (live) | "int16-grid baseline" | "float16 baseline" (the full
    #: store's quantised rows) | "unbiased estimate" | "lower bound"; KL(C‖B) the same, but "lower bound" from a
    #: compact store (it holds no sample of the candidate's tail).
    kl_forward: str = "exact"
    kl_reverse: str = "exact"
    #: What the per-position KLs are — the percentiles, maximum, σ and most divergent positions are taken over
    #: them: "exact" | the full store's kind | "estimate" (compact: each position's tail term from its samples; the
    #: mean of estimates is unbiased, their spread and extremes are not) | "lower bound".
    kl_positions: str = "exact"

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        """Runs written before the full store had its name said store "exact" and called its KL exact."""
        if isinstance(data, dict) and "kl_positions" not in data:
            data = dict(data)
            if data.get("store") == "exact":
                data["store"] = "full"
            code = data.get("full_code") or data.get("exact_code") or "int16"
            data |= kl_kinds(str(data.get("store")), int(data.get("tail_samples") or 0), code)
        return data


def kl_kinds(store: str, tail_samples: int, full_code: str = "int16") -> dict[str, str]:
    """What the KLs from a baseline store are: ``kl_forward``, ``kl_reverse`` and ``kl_positions`` of the settings."""
    if store == "live":
        return {"kl_forward": "exact", "kl_reverse": "exact", "kl_positions": "exact"}
    if store == "full":
        grid = "int16-grid baseline" if full_code == "int16" else f"{full_code} baseline"
        return {"kl_forward": grid, "kl_reverse": grid, "kl_positions": grid}
    forward = "unbiased estimate" if tail_samples else "lower bound"
    positions = "estimate" if tail_samples else "lower bound"
    return {"kl_forward": forward, "kl_reverse": "lower bound", "kl_positions": positions}


class WindowStats(BaseModel):
    window: int
    n: int
    ppl_base: float
    ppl_cand: float
    kl_mean: float
    same_top: float


class Divergent(BaseModel):
    window: int
    position: int
    kl: float
    context: str
    token: str


class KLDRunFile(BaseModel):
    schema_version: int = KLD_SCHEMA_VERSION
    kind: str = "kld"
    created: str
    flipscope_version: str
    settings: KLDRunSettings
    baseline: dict[str, Any]
    candidates: list[dict[str, Any]]
    store: dict[str, Any]
    summary: dict[str, CorpusSummary]
    per_window: dict[str, list[WindowStats]] = Field(default_factory=dict)
    most_divergent: dict[str, list[Divergent]] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def finite_positions(cols: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int]]:
    """A candidate's position columns without the windows holding a NaN or infinite value, and those windows."""
    return finite_windows(cols, POSITION_COLUMNS)


def summarize_positions(cols: dict[str, np.ndarray], label: str) -> CorpusSummary:
    """The corpus summary of one candidate's stored positions: windows with NaN or infinite log-probabilities are
    left out and listed (``excluded_windows``); none left is an error naming the candidate."""
    kept, bad = finite_positions(cols)
    if kept["kl"].size == 0:
        raise FlipscopeError(
            f"{label} gave NaN or infinite log-probabilities in every window: there is nothing to measure",
            fix="check its compression settings, or run in float32 (--dtype float32)",
        )
    summary = summarize_corpus(**{c: kept[c] for c in POSITION_COLUMNS}, window=kept["window"])
    return summary.model_copy(update={"excluded_windows": bad})


def write_kld_run(out: Path, run: KLDRunFile, positions: dict[str, dict[str, np.ndarray]]) -> None:
    """positions: candidate → column → [n] array (plus ``window`` and ``position``). Each file written under a
    temporary name and renamed into place, ``run.json`` last: a run directory with a ``run.json`` is complete."""
    import pandas as pd

    from flipscope.plumbing.atomic import write_atomically
    from flipscope.store.run_dir import finish

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat(
        [pd.DataFrame({"candidate": label, **cols}) for label, cols in positions.items()], ignore_index=True
    )
    write_atomically(out / "positions.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    finish(out, run.model_dump_json(indent=2))


def read_kld_run(folder: Path) -> tuple[KLDRunFile, Any]:
    """(run file, positions DataFrame)."""
    import pandas as pd

    try:
        data = json.loads((folder / "run.json").read_text())
        run = KLDRunFile.model_validate(data)
        frame = pd.read_parquet(folder / "positions.parquet")
    except (OSError, ValueError) as exc:
        raise FlipscopeError(
            f"cannot read kld run {folder}: {exc}", fix="give a folder written by flipscope kld"
        ) from exc
    return run, frame
