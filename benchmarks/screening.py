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
Compute: forward tokens (every option's prompt + continuation, by the baseline's tokenizer, for each model that scored
the item; corpus windows × their length) and wall time, per stage. Prints the Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from scipy import stats

import flipscope
from flipscope.models import LoadOptions, load_backend, parse_spec
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


def token_counter(tasks: list[str]) -> Callable[[str, str], int]:
    """(task, item_id) → tokens a model reads to score that item: every request's prefix + prompt + option."""
    backend = load_backend(parse_spec(BASELINE), LoadOptions(device="cpu"))
    counts: dict[tuple[str, str], int] = {}
    for name in tasks:
        task = load_task(name, fewshot=0, limit=None)
        for item, prompts in zip(task.items, item_requests(task, flipscope.tasks.PromptFormat.CLOZE, 0), strict=True):
            counts[(name, item.item_id)] = sum(
                backend.count_tokens(r.prefix + r.prompt + option) or 0
                for r in prompts.requests
                for option in r.continuations
            )
    backend.close()
    return lambda task, item: counts[(task, item)]


def scored_tokens(run_dir: Path, count: Callable[[str, str], int]) -> int:
    records = pd.read_parquet(run_dir / "records.parquet")
    return int(sum(count(str(t), str(i)) for t, i in zip(records.task, records.item_id, strict=True)))


def timed(run: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="items per task of the full suite (and the cap)")
    parser.add_argument("--samples", default="3,10", help="screen's items per task, one screen per value")
    parser.add_argument("--windows", type=int, default=4, help="screen's corpus windows (512 tokens)")
    parser.add_argument("--budget", type=float, default=10.0, help="sequential's flip budget, percent")
    parser.add_argument("--chunk", type=int, default=20, help="sequential's items between looks")
    parser.add_argument("--tasks", default="paper")
    parser.add_argument("--out", default="bench/screening")
    parser.add_argument("--candidates", nargs="*", default=CANDIDATES)
    args = parser.parse_args()
    out, tasks = Path(args.out), split_tasks(args.tasks)
    common = {"tasks": tasks, "seed": 0, "device": "cpu"}

    # the full suite: every one of the first `limit` items of each task's seeded order — the items the sequential
    # stage draws from (a sequential run that cannot stop: its precision is out of reach), in the sequential
    # stage's chunks, so that stage reads them from this cache
    everything = flipscope.SequentialPlan(precision=1e-9, chunk=args.chunk)
    full, full_s = timed(
        lambda: flipscope.compare(
            BASELINE,
            args.candidates,
            limit=args.limit,
            sequential=everything,
            out=out / "full",
            cache_dir=out / "cache-full",
            **common,
        )
    )
    plan = flipscope.SequentialPlan(flip_budget=args.budget, chunk=args.chunk)
    seq, seq_s = timed(
        lambda: flipscope.compare(
            BASELINE,
            args.candidates,
            limit=args.limit,
            sequential=plan,
            out=out / "sequential",
            cache_dir=out / "cache-full",
            **common,
        )
    )
    screens = {}
    for sample in (int(v) for v in args.samples.split(",")):
        screens[sample] = timed(
            lambda sample=sample: flipscope.screen(  # type: ignore[misc]
                BASELINE,
                args.candidates,
                sample=sample,
                windows=args.windows,
                out=out / f"screen-{sample}",
                cache_dir=out / f"cache-screen-{sample}",
                **common,
            )
        )

    names = [n for n in full.summary[next(iter(full.summary))] if n != "all"]  # type: ignore[attr-defined]
    count = token_counter(names)
    full_tokens = scored_tokens(out / "full", count)
    seq_tokens = scored_tokens(out / "sequential", count)
    corpus_tokens = (1 + len(args.candidates)) * args.windows * 512

    print("\n### screen vs the full suite\n")
    print(
        f"`python benchmarks/screening.py --limit {args.limit} --samples {args.samples} --windows {args.windows} "
        f"--chunk {args.chunk}` ({len(args.candidates)} candidates and the baseline, tasks: {args.tasks}, "
        f"{args.limit} items per task; one machine, one run)\n"
    )
    print(
        "| | items per task | forward tokens | wall time | ρ, predicted vs measured pooled flips "
        "| ρ per task (median, min) | ρ, ranking (corpus KL) vs measured pooled flips |"
    )
    print("|---|---|---|---|---|---|---|")
    print(f"| full suite | {args.limit} | {full_tokens:,} | {full_s:.0f} s | — | — | — |")
    for sample, (screened, screen_s) in screens.items():
        tokens = scored_tokens(out / f"screen-{sample}" / "sample", count) + corpus_tokens
        rho, per_task = spearman(screened, full, names)
        spread = f"{pd.Series(per_task).median():.2f}, {min(per_task):.2f}" if per_task else "—"
        print(
            f"| screen, {args.windows} windows | {sample} | {tokens:,} ({tokens / full_tokens:.1%}) | "
            f"{screen_s:.0f} s | {rho:.3f} | {spread} | {ranking_rho(screened, full):.3f} |"
        )

    agree = used = total = decided = 0
    for label, per_task in seq.summary.items():  # type: ignore[attr-defined]
        for task, s in per_task.items():
            if task == "all" or s.sequential is None:
                continue
            measured = full.summary[label][task].flips  # type: ignore[attr-defined]
            truth = "below" if measured is not None and measured < args.budget / 100 else "above"
            total += 1
            decided += s.sequential.decision != "undecided"
            agree += s.sequential.decision == truth
            used += s.sequential.n / s.sequential.available
    print("\n### sequential vs the full suite\n")
    print(
        f"flip budget {args.budget}%, chunks of {args.chunk}, α = 0.05, on the same first {args.limit} items per "
        "task; the full suite's decision: its measured flips below or above the budget. The sequential run read its "
        "chunks from the full stage's cache: its compute is the forward tokens of the items it scored\n"
    )
    print("| | forward tokens | decided | decisions = full suite's | items used (mean share) |")
    print("|---|---|---|---|---|")
    print(f"| full suite | {full_tokens:,} | — | — | 100% |")
    print(
        f"| sequential | {seq_tokens:,} ({seq_tokens / full_tokens:.1%}) | {decided} of {total} | "
        f"{agree} of {total} ({agree / max(decided, 1):.1%} of those decided) | {used / max(total, 1):.1%} |"
    )
    print(f"\n(the sequential run's own wall time, its chunks read from the cache: {seq_s:.0f} s)")
    print("\n### per candidate\n")
    print(per_candidate(full, seq, screens, names))


def per_candidate(full: object, seq: object, screens: dict[int, tuple[object, float]], tasks: list[str]) -> str:
    """Measured pooled flips, the sequential decisions (count per kind, mean items used) and screen's predictions."""
    head = ["candidate", "measured flips, all", "sequential: below / above / undecided (items used)"]
    head += [f"screen {s}: corpus KL, predicted flips, all" for s in screens]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    screened = {
        s: {e["spec"]: e for e in r.run.model_dump(mode="json")["candidates"]}  # type: ignore[attr-defined]
        for s, (r, _) in screens.items()
    }
    for label, per_task in seq.summary.items():  # type: ignore[attr-defined]
        kinds = [per_task[t].sequential for t in tasks if t in per_task and per_task[t].sequential]
        count = {k: sum(q.decision == k for q in kinds) for k in ("below", "above", "undecided")}
        share = sum(q.n / q.available for q in kinds) / max(len(kinds), 1)
        cells = [label, f"{full.summary[label]['all'].flips:.1%}"]  # type: ignore[attr-defined]
        cells.append(f"{count['below']} / {count['above']} / {count['undecided']} ({share:.0%})")
        for by_spec in screened.values():
            e = by_spec.get(label, {})
            point = (e.get("predicted_flips") or {}).get("all") or [None]
            kl = e.get("corpus_kl")
            cells.append(f"{kl:.4f}, " if kl is not None else "—, ")
            cells[-1] += f"{point[0]:.1%}" if point[0] is not None else "—"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranking_rho(screened: object, full: object) -> float:
    """ρ of screen's ranking measure (corpus KL) against the full suite's measured pooled flips."""
    pairs = [
        (e["corpus_kl"], full.summary[e["spec"]]["all"].flips)  # type: ignore[attr-defined]
        for e in screened.run.model_dump(mode="json")["candidates"]  # type: ignore[attr-defined]
        if e.get("corpus_kl") is not None
    ]
    return float(stats.spearmanr(*zip(*pairs, strict=True)).statistic) if len(pairs) > 2 else float("nan")


def spearman(screened: object, full: object, tasks: list[str]) -> tuple[float, list[float]]:
    """ρ of screen's predicted flips (the point) against the full suite's measured flips: pooled ("all"), and per task
    over the candidates screen made a prediction for."""
    rows = []
    for entry in screened.run.model_dump(mode="json")["candidates"]:  # type: ignore[attr-defined]
        for task, triple in (entry.get("predicted_flips") or {}).items():
            measured = full.summary[entry["spec"]][task].flips  # type: ignore[attr-defined]
            if triple and triple[0] is not None and measured is not None:
                rows.append({"task": task, "predicted": triple[0], "measured": measured})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return float("nan"), []
    pooled = frame[frame.task == "all"]
    rho = float(stats.spearmanr(pooled.predicted, pooled.measured).statistic) if len(pooled) > 2 else float("nan")
    per_task = [
        float(stats.spearmanr(g.predicted, g.measured).statistic)
        for t, g in frame.groupby("task")
        if t in tasks and len(g) > 2
    ]
    return rho, per_task


if __name__ == "__main__":
    main()
