"""Results of one model on one task, cached on disk under a content hash.

A pass directory holds ``scores.parquet`` (one row per item), ``pass.json`` (the model's identity) and, for a
baseline, its answer-token distributions in compact form (``rows.npz``: top-k ids and log-probs, tail log-mass,
and per (item, option) the span of rows) and ``pieces.json`` (each id's token text, for top-k KL against servers;
for a server baseline, the ids index the texts it named). Writing goes to a temporary folder renamed at the end, so an
interrupted run never leaves a half-written pass behind, and every finished pass survives for the next run; a
complete pass is never replaced by one another process finishes later (the first stays, and both runs read it).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flipscope.metrics import FreeAnswer, ItemScore, Scoring
from flipscope.metrics.kl import CompactRows
from flipscope.plumbing.atomic import exclusive, write_once

ROW_FIELDS = ("ids", "logprobs", "rest", "sample_ids", "sample_logprobs")


@dataclass(frozen=True)
class ReferenceRows:
    """A baseline's compact answer-token rows; ``spans[j]`` = (start, end) rows of the j-th (item, option).
    ``kind``: "full" = top-k of full-vocabulary rows (ids are the model's token ids); "topk" = what a server named
    (ids index ``pieces``). ``pieces``: token text per id, where known."""

    rows: CompactRows
    spans: np.ndarray  # [n_item_options, 2] int64
    kind: Literal["full", "topk"] = "full"
    pieces: list[str] | None = None

    def option(self, j: int) -> CompactRows:
        start, end = (int(v) for v in self.spans[j])
        return self.rows.slice(start, end)

    @property
    def mean_tail_mass(self) -> float:
        return float(np.mean(np.exp(self.rows.rest.astype(np.float64)))) if len(self.rows) else 0.0


@dataclass
class PassResult:
    key: str
    model: dict[str, Any]
    scores: list[ItemScore]
    reference: ReferenceRows | None = None

    @property
    def tokenizer(self) -> str:
        return str(self.model.get("tokenizer_fingerprint", ""))


def _scores_frame(scores: list[ItemScore]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "task": [s.task for s in scores],
            "item_id": [s.item_id for s in scores],
            "subject": [s.subject for s in scores],
            "target": [s.target for s in scores],
            "choice_logprobs": [list(s.logprobs) for s in scores],
            "option_chars": [list(s.option_chars) for s in scores],
            "option_tokens": [list(s.option_tokens) for s in scores],
            "token_kl": pd.array([s.token_kl for s in scores], dtype="Float64"),
            "scoring": [greedy_cells(s)["scoring"] for s in scores],
            "greedy": [greedy_cells(s)["greedy"] for s in scores],
        }
    )


def greedy_cells(score: ItemScore) -> dict[str, Any]:
    """An item's rule for correctness (``Scoring``) and its options' greedy flags (None where not known): the
    cells that let a stored pass or run directory give back ``correct`` (``greedy_fields`` reads them)."""
    return {"scoring": score.scoring.value, "greedy": None if score.greedy is None else [bool(g) for g in score.greedy]}


def greedy_fields(row: Any) -> dict[str, Any]:
    """``greedy_cells`` of one frame row as ItemScore fields (frames written before them: argmax, no flags)."""
    flags = getattr(row, "greedy", None)
    if flags is not None and np.ndim(flags) == 0:  # a missing value as pandas gives it (NaN)
        flags = None
    return {
        "scoring": Scoring(str(getattr(row, "scoring", None) or Scoring.ARGMAX)),
        "greedy": None if flags is None else tuple(bool(g) for g in flags),
    }


def _free_answer(row: Any) -> FreeAnswer | None:
    """A records row's free-form answer (run directories' records.parquet), None for multiple choice."""
    import pandas as pd

    text = getattr(row, "output", None)
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return None

    def value(name: str) -> Any:
        v = getattr(row, name, None)
        return None if v is None or (not isinstance(v, (list, np.ndarray)) and pd.isna(v)) else v

    ids = value("output_token_ids")
    return FreeAnswer(
        text=str(text),
        answer=str(row.answer),
        correct=bool(row.correct),
        correct_strict=bool(row.correct_strict),
        stop_reason=str(row.stop_reason),
        new_tokens=None if value("new_tokens") is None else int(row.new_tokens),
        token_ids=None if ids is None else tuple(int(i) for i in ids),
        ref_logprob=None if value("ref_logprob") is None else float(row.ref_logprob),
        ref_tokens=None if value("ref_tokens") is None else int(row.ref_tokens),
        found=None if value("found") is None else bool(row.found),
    )


def scores_from_frame(frame: Any) -> list[ItemScore]:
    import pandas as pd

    out = []
    for row in frame.itertuples(index=False):
        kl = row.token_kl
        out.append(
            ItemScore(
                task=str(row.task),
                item_id=str(row.item_id),
                subject=str(row.subject),
                target=int(row.target),
                logprobs=tuple(float(v) for v in row.choice_logprobs),
                option_chars=tuple(int(v) for v in row.option_chars),
                option_tokens=tuple(int(v) for v in getattr(row, "option_tokens", ())),
                free=_free_answer(row),
                token_kl=None if kl is None or pd.isna(kl) else float(kl),
                **greedy_fields(row),
            )
        )
    return out


def _complete(folder: Path) -> bool:
    return (folder / "pass.json").is_file()


class PassStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        """Whether a pass is stored under ``key``, without reading it."""
        return _complete(self.path(key))

    def load(self, key: str) -> PassResult | None:
        """The pass stored under ``key``; None where there is none — or where it went while being read (another
        process merged a stored pass's chunks and deleted them): the caller scores it, or keeps its own."""
        try:
            return self._read(key)
        except FileNotFoundError:
            return None

    def _read(self, key: str) -> PassResult | None:
        folder = self.path(key)
        if not self.has(key):
            return None
        import pandas as pd

        model = json.loads((folder / "pass.json").read_text())
        scores = scores_from_frame(pd.read_parquet(folder / "scores.parquet"))
        reference = None
        if (folder / "rows.npz").exists():
            with np.load(folder / "rows.npz") as data:
                rows = CompactRows(*(data[f] for f in ROW_FIELDS))
                spans = data["spans"]
            meta = json.loads((folder / "pieces.json").read_text()) if (folder / "pieces.json").exists() else {}
            reference = ReferenceRows(rows, spans, meta.get("kind", "full"), meta.get("pieces"))
        return PassResult(key, model, scores, reference)

    def delete(self, key: str) -> None:
        """Delete a pass and its lock file, under its lock: a process writing it finishes first, and one waiting for
        it then takes a new lock file."""
        path = self.path(key)
        with exclusive(path, remove=True):
            shutil.rmtree(path, ignore_errors=True)

    def save(self, result: PassResult, *, replace: bool = False) -> PassResult:
        """Store ``result`` and return the pass stored under its key: a complete pass already there (another process
        finished it first) is kept and returned, so every run reads the same one; ``replace`` (a pass run again on
        purpose, ``--no-cache``) writes over it."""
        written: list[bool] = []

        def make(tmp: Path) -> None:
            self._write(tmp, result)
            written.append(True)

        write_once(self.path(result.key), make, done=lambda folder: not replace and _complete(folder))
        stored = None if written else self.load(result.key)
        return stored if stored is not None else result

    @staticmethod
    def _write(tmp: Path, result: PassResult) -> None:
        tmp.mkdir(parents=True)
        _scores_frame(result.scores).to_parquet(tmp / "scores.parquet", index=False)
        if result.reference is not None:
            r = result.reference
            np.savez(tmp / "rows.npz", spans=r.spans, **{f: getattr(r.rows, f) for f in ROW_FIELDS})
            (tmp / "pieces.json").write_text(json.dumps({"kind": r.kind, "pieces": r.pieces}, ensure_ascii=False))
        (tmp / "pass.json").write_text(json.dumps(result.model, indent=1, default=str))
