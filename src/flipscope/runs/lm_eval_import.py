"""``flipscope import lm-eval``: paired metrics from lm-evaluation-harness sample logs, written as a normal run
directory (``report`` and every metric work on it), without running a model."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.importers.lm_eval import Sample, check_agreement, item_score, read_samples, results_file, task_files
from flipscope.metrics import ItemScore, summarize_run
from flipscope.plumbing.version import flipscope_version
from flipscope.store import ModelEntry, RunFile, Settings, TaskEntry, records_frame, write_run
from flipscope.store.run_dir import check_out, claim_run_dir, releases_out


@dataclass(frozen=True)
class LMEvalRun:
    """One lm-eval output folder: its newest samples file per task, and what its results file says."""

    folder: Path
    files: dict[str, Path]
    config: dict[str, Any]
    n_shot: dict[str, Any]
    results: dict[str, Any]
    version: str

    @property
    def model(self) -> str:
        args = str(self.config.get("model_args") or "")
        name = next((a.split("=", 1)[1] for a in args.split(",") if a.startswith("pretrained=")), "")
        return name or self.folder.name


def _open(folder: str | Path) -> LMEvalRun:
    path = Path(folder).expanduser()
    files = task_files(path)
    meta = results_file(next(iter(files.values()))) or {}
    return LMEvalRun(path, files, dict(meta.get("config") or {}), dict(meta.get("n-shot") or {}),
                     dict(meta.get("results") or {}), str(meta.get("lm_eval_version") or "unknown"))  # fmt: skip


def _labels(runs: list[LMEvalRun]) -> list[str]:
    """A name per run: its model (``pretrained=``), or its folder where two runs share a model name."""
    names = [f"lm-eval:{r.model}" for r in runs]
    if len(set(names)) < len(names):
        names = [f"lm-eval:{r.folder}" for r in runs]
    if len(set(names)) < len(names):
        raise FlipscopeError("the same lm-eval output folder is given twice", fix="give each run's folder once")
    return names


def _check_pairs(task: str, base: list[Sample], cand: list[Sample], base_run: LMEvalRun, cand_run: LMEvalRun) -> None:
    ids_b, ids_c = [s.doc_id for s in base], [s.doc_id for s in cand]
    if ids_b != ids_c:
        only_b, only_c = sorted(set(ids_b) - set(ids_c)), sorted(set(ids_c) - set(ids_b))
        raise FlipscopeError(
            f"{task}: the runs scored different documents ({len(ids_b)} in {base_run.folder}, {len(ids_c)} in "
            f"{cand_run.folder}; only in the first: {only_b[:5]}, only in the second: {only_c[:5]})",
            fix="run both with the same --limit / --samples, or import the runs that cover the same items",
        )
    for field, what in (("doc_hash", "documents"), ("prompt_hash", "prompts")):
        differ = [b.doc_id for b, c in zip(base, cand, strict=True) if getattr(b, field) != getattr(c, field)]
        if differ:
            raise FlipscopeError(
                f"{task}: {len(differ)} of {len(base)} {what} differ between {base_run.folder} and {cand_run.folder} "
                f"({field}, e.g. doc_id {differ[0]}): a different few-shot setting, template or data version",
                fix="compare runs made with the same task config and --num_fewshot",
            )


def _tasks(runs: list[LMEvalRun], asked: Sequence[str] | None) -> list[str]:
    names = list(asked) if asked else list(runs[0].files)
    for run in runs:
        missing = [t for t in names if t not in run.files]
        if missing:
            raise FlipscopeError(
                f"task {missing[0]} has no samples file in {run.folder} (it has: {', '.join(run.files)})",
                fix="pass --task for the tasks every run has, or rerun lm-eval with --log_samples on them",
            )
    return names


def _fingerprint(files: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for task, path in sorted(files.items()):
        digest.update(task.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _entry(run: LMEvalRun, label: str, role: str, tasks: list[str]) -> ModelEntry:
    files = {t: run.files[t] for t in tasks}
    details = {"lm_eval_output": str(run.folder), "samples": {t: str(p) for t, p in files.items()},
               "model_args": run.config.get("model_args"), "lm_eval_version": run.version,
               "token_kl": None}  # fmt: skip
    return ModelEntry(spec=label, role=role, fingerprint=_fingerprint(files), details=details)


def _items_frame(samples: dict[str, list[Sample]]) -> Any:
    import pandas as pd

    rows = [{"task": task, "item_id": str(s.doc_id), "question": s.prompt, "choices": s.options,
             "answer": s.target if isinstance(s.target, int) else -1, "target": str(s.target), "subject": task}
            for task, items in samples.items() for s in items]  # fmt: skip
    return pd.DataFrame(rows)


@releases_out
def import_lm_eval(
    baseline: str | Path,
    candidates: Sequence[str | Path],
    *,
    tasks: Sequence[str] | None = None,
    out: str | Path | None = None,
) -> tuple[RunFile, Path]:
    """Pair the baseline's and each candidate's lm-eval samples by ``doc_id`` (documents and prompts checked by
    their hashes), recompute correctness from the logged log-likelihoods, and write a flipscope run directory."""
    if not candidates:
        raise FlipscopeError("no candidate run given", fix="flipscope import lm-eval BASELINE_DIR CANDIDATE_DIR...")
    check_out(out)
    runs = [_open(baseline), *(_open(c) for c in candidates)]
    labels = _labels(runs)
    names = _tasks(runs, tasks)
    per_run: list[dict[str, list[Sample]]] = [{t: read_samples(r.files[t], t) for t in names} for r in runs]
    scores: dict[str, list[ItemScore]] = {}
    for run, label, samples in zip(runs, labels, per_run, strict=True):
        items: list[ItemScore] = []
        for task in names:
            if run is not runs[0]:
                _check_pairs(task, per_run[0][task], samples[task], runs[0], run)
            converted = [item_score(s) for s in samples[task]]
            check_agreement(samples[task], converted, run.files[task])
            items += converted
        scores[label] = items
    base_label = labels[0]
    summary = {label: summarize_run(scores[base_label], scores[label], names) for label in labels[1:]}
    generative = [t for t in names if not per_run[0][t] or not per_run[0][t][0].options]
    notes = ["imported from lm-eval sample logs: correctness and choice KL from the logged log-likelihoods; no "
             "token KL (lm-eval logs no per-token distributions)"]  # fmt: skip
    if generative:
        notes.append(f"{', '.join(generative)}: generative — correct/incorrect per item from exact_match; choice "
                     "KL unavailable")  # fmt: skip
    run_file = RunFile(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flipscope_version=flipscope_version(),
        versions={"lm_eval": runs[0].version},
        settings=_settings(runs[0], names),
        baseline=_entry(runs[0], base_label, "baseline", names),
        candidates=[_entry(r, label, "candidate", names) for r, label in zip(runs[1:], labels[1:], strict=True)],
        tasks=[_task_entry(runs[0], t) for t in names],
        summary=summary,
        notes=notes,
    )
    folder = claim_run_dir(out, prefix="lm-eval-")
    roles = {label: ("baseline" if label == base_label else "candidate", s) for label, s in scores.items()}
    write_run(folder, run_file, records_frame(roles), _items_frame(per_run[0]))
    return run_file, folder


def _settings(run: LMEvalRun, tasks: list[str]) -> Settings:
    """The baseline run's settings as lm-eval recorded them (-1 / "unknown" where it did not)."""
    shots = {run.n_shot.get(t) for t in tasks}
    fewshot = shots.pop() if len(shots) == 1 else None
    return Settings(
        format="lm-eval",
        fewshot=fewshot if isinstance(fewshot, int) else -1,
        limit=None,
        seed=int(run.config.get("random_seed") or 0),
        topk=0,
        tail_samples=0,
        device=str(run.config.get("device") or "unknown"),
        dtype="unknown",
        batch_size=_batch(run.config),
    )


def _task_entry(run: LMEvalRun, task: str) -> TaskEntry:
    meta = {"source": "lm-eval", "n_shot": run.n_shot.get(task), "samples_file": str(run.files[task])}
    return TaskEntry(name=task, meta=meta)


def _batch(config: dict[str, Any]) -> int:
    try:
        return int(config.get("batch_size") or 0)
    except (TypeError, ValueError):  # "auto"
        return 0
