"""Issue 26's evidence, measured side by side in one run on one machine: is `screen` (corpus KL on a few windows +
a small item sample) enough to rank a sweep as the full suite does, and does `compare --sequential` reach the full
suite's decisions with fewer items?

    python benchmarks/screening.py [--limit 100] [--sample 5] [--windows 8] [--budget 10] [--out bench/screening]

Three stages over the same baseline and candidates, each with a cache folder of its own (nothing one stage scored is
reused by another; every candidate is compressed afresh in each):
1. full: `compare --tasks paper --limit L` — the reference: measured flips per (candidate, task) and pooled;
2. screen: `screen --tasks paper --sample S --windows W` — predicted flips (calibrated on the fly, leave one
   candidate out); Spearman ρ of predicted vs the full suite's measured flips, pooled and per task;
3. sequential: `compare --sequential --flip-budget B --limit L` — each (candidate, task) decision against the full
   suite's point decision (measured flips below / above B), and the share of items it used.
Compute: forward tokens (every option's prompt + continuation, by the baseline's tokenizer, for each model that scored
the item; corpus windows × their length) and wall time, per stage. Prints the two Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import json
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
    "+rtn:w4g128",
    "+rtn:w4g64",
    "+rtn:w4g32",
    "+rtn:w3g128",
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
    parser.add_argument("--sample", type=int, default=5, help="screen's items per task")
    parser.add_argument("--windows", type=int, default=8, help="screen's corpus windows (512 tokens)")
    parser.add_argument("--budget", type=float, default=10.0, help="sequential's flip budget, percent")
    parser.add_argument("--chunk", type=int, default=20, help="sequential's items between looks")
    parser.add_argument("--tasks", default="paper")
    parser.add_argument("--out", default="bench/screening")
    parser.add_argument("--candidates", nargs="*", default=CANDIDATES)
    args = parser.parse_args()
    out, tasks = Path(args.out), split_tasks(args.tasks)
    common = {"tasks": tasks, "seed": 0, "device": "cpu"}

    full, full_s = timed(lambda: flipscope.compare(BASELINE, args.candidates, limit=args.limit, out=out / "full",
                                                   cache_dir=out / "cache-full", **common))  # fmt: skip
    screened, screen_s = timed(lambda: flipscope.screen(
        BASELINE, args.candidates, sample=args.sample, windows=args.windows, out=out / "screen",
        cache_dir=out / "cache-screen", **common))  # fmt: skip
    plan = flipscope.SequentialPlan(flip_budget=args.budget, chunk=args.chunk)
    seq, seq_s = timed(
        lambda: flipscope.compare(
            BASELINE, args.candidates, limit=args.limit, sequential=plan, out=out / "sequential",
            cache_dir=out / "cache-seq", **common,
        )
    )  # fmt: skip

    names = list(full.summary[next(iter(full.summary))])  # type: ignore[attr-defined]
    count = token_counter([n for n in names if n != "all"])
    full_tokens = scored_tokens(out / "full", count)
    seq_tokens = scored_tokens(out / "sequential", count)
    sample_tokens = scored_tokens(out / "screen" / "sample", count)
    corpus_tokens = (1 + len(args.candidates)) * args.windows * 512 if args.windows else 0
    screen_tokens = sample_tokens + corpus_tokens

    predicted = json.loads(json.dumps(screened.run.model_dump(mode="json")))  # type: ignore[attr-defined]
    rows = []
    for entry in predicted["candidates"]:
        spec = entry["spec"]
        for task, triple in (entry.get("predicted_flips") or {}).items():
            measured = full.summary[spec][task].flips  # type: ignore[attr-defined]
            if triple and triple[0] is not None and measured is not None:
                rows.append({"spec": spec, "task": task, "predicted": triple[0], "measured": measured})
    frame = pd.DataFrame(rows)
    print("\n### screen vs the full suite\n")
    print(f"`python benchmarks/screening.py --limit {args.limit} --sample {args.sample} --windows {args.windows}` "
          f"({len(args.candidates)} candidates, tasks {args.tasks})\n")  # fmt: skip
    print("| | forward tokens | wall time | Spearman ρ, pooled flips | Spearman ρ, per task (median) |")
    print("|---|---|---|---|---|")
    pooled = frame[frame.task == "all"] if "all" in set(frame.task) else frame.groupby("spec").mean(numeric_only=True)
    rho = stats.spearmanr(pooled.predicted, pooled.measured).statistic if len(pooled) > 2 else float("nan")
    per_task = [stats.spearmanr(g.predicted, g.measured).statistic for t, g in frame.groupby("task") if t != "all"
                and len(g) > 2]  # fmt: skip
    median = float(pd.Series(per_task).median()) if per_task else float("nan")
    print(f"| full suite | {full_tokens:,} | {full_s:.0f} s | — | — |")
    print(f"| screen | {screen_tokens:,} ({screen_tokens / full_tokens:.1%}) | {screen_s:.0f} s | {rho:.3f} | "
          f"{median:.3f} |")  # fmt: skip

    agree = used = total = decided = 0
    for spec in args.candidates:
        label = next(k for k in seq.summary if k.endswith(spec))  # type: ignore[attr-defined]
        for task, s in seq.summary[label].items():  # type: ignore[attr-defined]
            if task == "all" or s.sequential is None:
                continue
            measured = full.summary[label][task].flips  # type: ignore[attr-defined]
            truth = "below" if measured is not None and measured < args.budget / 100 else "above"
            total += 1
            decided += s.sequential.decision != "undecided"
            agree += s.sequential.decision == truth
            used += s.sequential.n / s.sequential.available
    print("\n### sequential vs the full suite\n")
    print(f"flip budget {args.budget}%, chunks of {args.chunk}, α = 0.05, at most {args.limit} items per task\n")
    print("| | forward tokens | wall time | decisions = full suite's | decided | items used (mean share) |")
    print("|---|---|---|---|---|---|")
    print(f"| full suite | {full_tokens:,} | {full_s:.0f} s | — | — | 100% |")
    print(f"| sequential | {seq_tokens:,} ({seq_tokens / full_tokens:.1%}) | {seq_s:.0f} s | {agree} of {total} "
          f"({agree / max(total, 1):.1%}) | {decided} of {total} | {used / max(total, 1):.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
