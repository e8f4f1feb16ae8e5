"""A sweep's report (many candidates × many tasks, hand-made records, no model): the overview matrix first, one row
per candidate with every task's flips, Δacc, the pooled column and the noise floor marked; warnings grouped by
kind; plots without text labels; sequential runs show their decision and n."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from flipscope.metrics import ItemScore, summarize_run
from flipscope.metrics.summary import SequentialSummary
from flipscope.metrics.noise_floor import floor_label
from flipscope.store import ModelEntry, NoiseFloorEntry, RunFile, Settings, TaskEntry, records_frame, write_run

BASE = "bundled:smollm2-135m"
#: task → number of options (the 8-task suite's shapes)
TASKS = {"boolq": 2, "piqa": 2, "winogrande": 2, "hellaswag": 4, "arc_easy": 4, "arc_challenge": 4,
         "openbookqa": 4, "mmlu": 4}  # fmt: skip
CANDIDATES = [f"{BASE}+rtn:w{b}g64" for b in (8, 6, 5, 4, 3)] + [f"{BASE}+rtn:plan=mixed.json"]


def _logprobs(pick: int, k: int) -> tuple[float, ...]:
    return tuple(-0.5 if o == pick else -2.0 - 0.1 * o for o in range(k))


def _scores(rate: float, seed: int, items: int, *, collapse: str = "") -> list[ItemScore]:
    """Per task, ``items`` items; the baseline (rate 0) right on 70%; others change the baseline's answer on about
    ``rate`` of the items. ``collapse``: a task on which this model answers option 0 nearly always."""
    out = []
    for task, k in TASKS.items():
        rng = random.Random(f"{task}-{seed}")
        base_rng = random.Random(task)
        for i in range(items):
            target = base_rng.randrange(k)
            pick = target if base_rng.random() < 0.7 else (target + 1) % k
            if rate and rng.random() < rate:
                pick = (pick + 1) % k
            if task == collapse and rng.random() < 0.95:
                pick = 0
            token_kl = None if not rate else rate * (0.5 + rng.random())
            out.append(ItemScore(task, f"{task}-{i}", "", target, _logprobs(pick, k), token_kl=token_kl))
    return out


def write_sweep(folder: Path, *, items: int = 60, sequential: bool = False) -> Path:
    """A compare run directory of 6 candidates × 8 tasks with a noise floor; candidates flip more as they have fewer
    bits; the 3-bit one collapses on boolq. ``sequential``: summaries carry a ``compare --sequential`` decision."""
    import pandas as pd

    base = _scores(0.0, 0, items)
    floor = _scores(0.01, 99, items)
    cands = {c: _scores(0.03 * (j + 1), j + 1, items, collapse="boolq" if j == 4 else "") for j, c in
             enumerate(CANDIDATES)}  # fmt: skip
    names = list(TASKS)
    summary = {c: summarize_run(base, s, names) for c, s in cands.items()}
    if sequential:
        for j, (c, per_task) in enumerate(summary.items()):
            for task, s in per_task.items():
                decision = ("below", "undecided", "above")[j % 3]
                seq = SequentialSummary(decision=decision, n=20 + 10 * j, interval=(0.0, 0.1), alpha=0.05,
                                        question="flips below 5%", available=s.n)  # fmt: skip
                per_task[task] = s.model_copy(update={"sequential": seq})
    details = [{"compression": {"rtn": {"avg_bits_per_weight": 4.3}}} if "plan" in c else {} for c in CANDIDATES]
    run = RunFile(
        created="2025-01-01T00:00:00+00:00",
        flipscope_version="test",
        versions={},
        settings=Settings(format="letter", fewshot=0, limit=items, seed=0, topk=128, tail_samples=64, device="cpu",
                          dtype="float32"),  # fmt: skip
        baseline=ModelEntry(spec=BASE, role="baseline", fingerprint="fp"),
        candidates=[ModelEntry(spec=c, role="candidate", fingerprint=f"fp{j}", details=details[j])
                    for j, c in enumerate(CANDIDATES)],  # fmt: skip
        tasks=[TaskEntry(name=t, meta={} if t == "mmlu" else {"template": t}) for t in names],
        summary=summary,
        noise_floor=NoiseFloorEntry(setup="batch 16 → 1", batch_size=1, dtype="float32",
                                    model=ModelEntry(spec=floor_label(BASE), role="candidate", fingerprint="fp"),
                                    summary=summarize_run(base, floor, names)),  # fmt: skip
    )
    labelled = {BASE: ("baseline", base), floor_label(BASE): ("candidate", floor)}
    labelled |= {c: ("candidate", s) for c, s in cands.items()}
    items_frame = pd.DataFrame([{"task": s.task, "item_id": s.item_id, "question": f"Question {s.item_id}?"}
                                for s in base])  # fmt: skip
    write_run(folder, run, records_frame(labelled), items_frame)
    return folder


def test_sweep_fixture_reads_back(tmp_path: Path) -> None:
    from flipscope.report import load_run

    run = load_run(write_sweep(tmp_path / "sweep"))
    assert len(run.summary) == 6 and all(len(per) == 9 for per in run.summary.values())
    assert re.search("w3", list(run.summary)[4]) and run.noise_floor is not None
    assert pytest.approx(run.summary[CANDIDATES[0]]["all"].n) == 8 * 60
