"""Issue 26's evidence, measured side by side in one run on one machine: is `screen` (corpus KL on a few windows +
a small item sample) enough to rank a sweep as the full suite does, and does `compare --sequential` reach the full
suite's decisions with fewer items?

    python benchmarks/screening.py [--limit 100] [--samples 3,10] [--windows 4] [--budget 10] [--out bench/screening]

Stages over the same baseline and candidates:
1. full: every one of the first L items of each task's seeded order (the items `--sequential --limit L` draws from),
   scored in chunks of C — the reference: measured flips per (candidate, task) and pooled;
2. sequential: `compare --sequential --flip-budget B --limit L --chunk C` — each (candidate, task) decision against
   the full suite's point decision (measured flips below / above B), and the share of items it used. It reads its
   chunks from the full stage's cache (a chunk pass is keyed by its items, not by the plan), so its compute is
   counted in forward tokens (the items it scored, for each model), not in wall time;
3. screen: `screen --tasks paper --sample S --windows W`, for each S, with a cache of its own (every candidate
   compressed afresh) — predicted flips (calibrated on the fly, leave one candidate out) and its ranking (corpus
   KL); Spearman ρ of each against the full suite's measured flips, pooled and per task.
Compute: forward tokens — what a model's forward passes read: each item's context once and each option's own tokens
(by the baseline's tokenizer), for each model that scored the item, and corpus windows × their length — and wall
time, per stage. Each stage's wall time goes into `OUT/timings.json`; the tables are computed from the run
directories and that file (`--tables-only` prints them again without running anything). The reference is the first L
items per task, not the whole suite: the tables give the whole suite's forward tokens beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

import flipscope
from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.store.run import RunFile, read_run
from flipscope.store.screen_run import ScreenRunFile, read_screen_run
from flipscope.tasks import item_requests, load_task, split_tasks

BASELINE = "bundled:smollm2-135m"
CANDIDATES = [
    "+rtn:w8",
    "+rtn:w6g64",
    "+rtn:w5g64",
    "+rtn:w4g192",
    "+rtn:w4g64",
    "+rtn:w4g32",
    "+rtn:w3g192",
    "+rtn:w3g64",
    "+hqq:w4g64",
    "+ggml:Q4_0",
    "+noise:0.02",
]


Summary = dict[str, dict[str, Any]]


def token_counter(tasks: list[str]) -> tuple[Callable[[str, str], int], dict[str, int]]:
    """(task, item_id) → tokens one model's forward passes read to score that item: each request's context (prefix +
    prompt, with BOS) once and each option's own tokens; and each task's total over all its items."""
    backend = load_backend(parse_spec(BASELINE), LoadOptions(device="cpu"))
    bos = backend.count_tokens("") or 0
    counts: dict[tuple[str, str], int] = {}
    for name in tasks:
        task = load_task(name, fewshot=0, limit=None)
        for item, prompts in zip(task.items, item_requests(task, flipscope.tasks.PromptFormat.CLOZE, 0), strict=True):
            counts[(name, item.item_id)] = sum(
                (backend.count_tokens(r.prefix + r.prompt) or 0)
                + sum((backend.count_tokens(option) or 0) - bos for option in r.continuations)
                for r in prompts.requests
            )
    backend.close()
    totals = {name: sum(v for (t, _), v in counts.items() if t == name) for name in tasks}
    return (lambda task, item: counts[(task, item)]), totals


def scored_tokens(run_dir: Path, count: Callable[[str, str], int]) -> int:
    records = pd.read_parquet(run_dir / "records.parquet")
    return int(sum(count(str(t), str(i)) for t, i in zip(records.task, records.item_id, strict=True)))


def timed(run: Callable[[], object], out: Path, stage: str) -> None:
    """Run one stage and add its wall time to ``out/timings.json``."""
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    path = out / "timings.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**saved, stage: seconds}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="items per task of the reference (and the cap)")
    parser.add_argument("--samples", default="3,10", help="screen's items per task, one screen per value")
    parser.add_argument("--windows", type=int, default=4, help="screen's corpus windows (512 tokens)")
    parser.add_argument("--budget", type=float, default=10.0, help="sequential's flip budget, percent")
    parser.add_argument("--chunk", type=int, default=20, help="sequential's items between looks")
    parser.add_argument("--tasks", default="paper")
    parser.add_argument("--out", default="bench/screening")
    parser.add_argument("--candidates", nargs="*", default=CANDIDATES)
    parser.add_argument("--tables-only", action="store_true", help="print the tables from OUT's runs; run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.tables_only:
        run_stages(args, out)
    tables(args, out)


def run_stages(args: argparse.Namespace, out: Path) -> None:
    common = {"tasks": split_tasks(args.tasks), "seed": 0, "device": "cpu", "limit": args.limit}
    out.mkdir(parents=True, exist_ok=True)
    # the reference: every one of the first `limit` items of each task's seeded order — the items the sequential
    # stage draws from (a sequential run that cannot stop: its precision is out of reach), in the sequential
    # stage's chunks, so that stage reads them from this cache
    everything = flipscope.SequentialPlan(precision=1e-9, chunk=args.chunk)
    reference = out / "cache-full"
    run = flipscope.compare
    timed(lambda: run(BASELINE, args.candidates, sequential=everything, out=out / "full", cache_dir=reference,
                      **common), out, "full")  # fmt: skip
    plan = flipscope.SequentialPlan(flip_budget=args.budget, chunk=args.chunk)
    timed(lambda: run(BASELINE, args.candidates, sequential=plan, out=out / "sequential", cache_dir=reference,
                      **common), out, "sequential")  # fmt: skip
    del common["limit"]
    for sample in (int(v) for v in args.samples.split(",")):
        timed(
            lambda sample=sample: flipscope.screen(  # type: ignore[misc]
                BASELINE, args.candidates, sample=sample, windows=args.windows, out=out / f"screen-{sample}",
                cache_dir=out / f"cache-screen-{sample}", **common,
            ),
            out, f"screen-{sample}",
        )  # fmt: skip


def tables(args: argparse.Namespace, out: Path) -> None:
    timings = json.loads((out / "timings.json").read_text())
    full, _ = read_run(out / "full")
    seq, _ = read_run(out / "sequential")
    screens = {int(v): read_screen_run(out / f"screen-{v}") for v in args.samples.split(",")}
    names = [n for n in full.summary[next(iter(full.summary))] if n != "all"]
    count, totals = token_counter(names)
    models = 1 + len(full.summary)
    full_tokens, suite_tokens = scored_tokens(out / "full", count), models * sum(totals.values())
    seq_tokens = scored_tokens(out / "sequential", count)
    print("\n### screen vs the reference (the first items of each task)\n")
    print(
        f"`python benchmarks/screening.py --limit {args.limit} --samples {args.samples} --windows {args.windows} "
        f"--chunk {args.chunk} --budget {args.budget} --tasks {args.tasks}` ({len(full.summary)} candidates and the "
        f"baseline; one machine, one run). The whole suite ({', '.join(names)}, every item) is "
        f"{suite_tokens:,} forward tokens for these models.\n"
    )
    print(
        "| | items per task | forward tokens (share of the reference; of the whole suite) | wall time "
        "| ρ, predicted vs measured pooled flips (candidates) | ρ per task: median, min (tasks) "
        "| ρ, ranking (corpus KL) vs measured pooled flips |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| reference: first {args.limit} items per task, in chunks of {args.chunk} | {args.limit} | "
        f"{full_tokens:,} (100%; {full_tokens / suite_tokens:.1%}) | {timings['full']:.0f} s | — | — | — |"
    )
    for sample, screened in screens.items():
        kld = screened.settings
        tokens = scored_tokens(out / f"screen-{sample}" / "sample", count) + models * kld["windows"] * kld["ctx"]
        rho, used, per_task = spearman(screened, full.summary, names)
        clean = pd.Series(per_task, dtype=float).dropna()
        spread = f"{clean.median():.2f}, {clean.min():.2f} ({len(clean)})" if len(clean) else "—"
        print(
            f"| screen, {kld['windows']} windows of {kld['ctx']} | {sample} | {tokens:,} "
            f"({tokens / full_tokens:.1%}; {tokens / suite_tokens:.2%}) | {timings[f'screen-{sample}']:.0f} s | "
            f"{rho:.3f} ({used}) | {spread} | {ranking_rho(screened, full.summary):.3f} |"
        )
    print(sequential_table(args, seq, full.summary, seq_tokens, full_tokens, timings))
    print("\n### per candidate\n")
    print(per_candidate(full.summary, seq, screens, names))


def sequential_table(
    args: argparse.Namespace, seq: RunFile, full: Summary, seq_tokens: int, full_tokens: int, timings: dict[str, float]
) -> str:
    """Each (candidate, task) decision against the reference's: its measured flips below or above the budget (a
    measured rate exactly at the budget, or none, is no decision: counted apart)."""
    agree = decided = total = ties = 0
    used: list[int] = []
    share: list[float] = []
    alpha = None
    for label, per_task in seq.summary.items():
        for task, s in per_task.items():
            if task == "all" or s.sequential is None:
                continue
            q, measured = s.sequential, full[label][task].flips
            alpha = q.alpha
            total += 1
            used.append(q.n)
            share.append(q.n / q.available)
            decided += q.decision != "undecided"
            if measured is None or measured == args.budget / 100:
                ties += 1
                continue
            agree += q.decision == ("below" if measured < args.budget / 100 else "above")
    lines = [
        "\n### sequential vs the reference\n",
        f"flip budget {args.budget}%, chunks of {args.chunk}, α = {alpha}, capped at the reference's {args.limit} "
        "items per task; the reference's decision: its measured flips below or above the budget. The sequential run "
        f"read its chunks from the reference's cache (its own wall time, reading them: {timings['sequential']:.0f} s): "
        "its compute is the forward tokens of the items it scored. Items used are out of the cap, not the whole task."
        + (f" {ties} pairs measured exactly at the budget are left out of the agreement." if ties else "")
        + "\n",
        "| | forward tokens | (candidate, task) pairs decided | decisions = reference's: of all pairs; of those "
        "decided | items used per pair: mean (share of the cap) |",
        "|---|---|---|---|---|",
        f"| reference | {full_tokens:,} | — | — | {args.limit} (100%) |",
        f"| sequential | {seq_tokens:,} ({seq_tokens / full_tokens:.1%}) | {decided} of {total} "
        f"({total - decided} undecided) | {agree} of {total} ({agree / max(total, 1):.1%}); {agree} of {decided} "
        f"({agree / max(decided, 1):.1%}) | {sum(used) / max(total, 1):.1f} ({sum(share) / max(total, 1):.1%}) |",
    ]
    return "\n".join(lines)


def per_candidate(full: Summary, seq: RunFile, screens: dict[int, ScreenRunFile], tasks: list[str]) -> str:
    """Measured pooled flips, the sequential decisions (count per kind, mean items used) and screen's predictions."""
    head = ["candidate", "measured flips, all", "sequential: below / above / undecided (items used)"]
    head += [f"screen {s}: corpus KL, predicted flips, all" for s in screens]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    screened = {s: {c.spec: c for c in r.candidates} for s, r in screens.items()}
    for label, per_task in seq.summary.items():
        kinds = [q for t in tasks if t in per_task and (q := per_task[t].sequential) is not None]
        count = {k: sum(q.decision == k for q in kinds) for k in ("below", "above", "undecided")}
        share = sum(q.n / q.available for q in kinds) / max(len(kinds), 1)
        measured = full[label]["all"].flips
        cells = [label.removeprefix(BASELINE), f"{measured:.1%}" if measured is not None else "—"]
        cells.append(f"{count['below']} / {count['above']} / {count['undecided']} ({share:.0%})")
        for by_spec in screened.values():
            c = by_spec.get(label)
            point = (c.predicted_flips.get("all") if c else None) or (None,)
            kl = c.corpus_kl if c else None
            cells.append(
                (f"{kl:.4f}, " if kl is not None else "—, ") + (f"{point[0]:.1%}" if point[0] is not None else "—")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_rho(screened: ScreenRunFile, full: Summary) -> float:
    """ρ of screen's ranking measure (corpus KL) against the reference's measured pooled flips."""
    pairs = [(c.corpus_kl, full[c.spec]["all"].flips) for c in screened.candidates if c.corpus_kl is not None]
    return float(stats.spearmanr(*zip(*pairs, strict=True)).statistic) if len(pairs) > 2 else float("nan")


def spearman(screened: ScreenRunFile, full: Summary, tasks: list[str]) -> tuple[float, int, list[float]]:
    """ρ of screen's predicted flips (the point) against the reference's measured flips: pooled ("all", with the
    number of candidates predicted), and per task over the candidates screen made a prediction for."""
    rows = []
    for c in screened.candidates:
        for task, triple in c.predicted_flips.items():
            measured = full[c.spec][task].flips
            if triple and triple[0] is not None and measured is not None:
                rows.append({"task": task, "predicted": triple[0], "measured": measured})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return float("nan"), 0, []
    pooled = frame[frame.task == "all"]
    rho = float(stats.spearmanr(pooled.predicted, pooled.measured).statistic) if len(pooled) > 2 else float("nan")
    per_task = [
        float(stats.spearmanr(g.predicted, g.measured).statistic)
        for t, g in frame.groupby("task")
        if t in tasks and len(g) > 2
    ]
    return rho, len(pooled), per_task


if __name__ == "__main__":
    main()
