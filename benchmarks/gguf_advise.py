"""Issue 28's evidence: llama.cpp's own recipes (Q3_K_M, Q4_K_M, Q5_K_M) against per-tensor files advised by
`flipscope advise gguf:` at each recipe's size, without and with an importance matrix, all written by llama.cpp's
quantizer and all measured through llama.cpp (`gguf:` files).

    python benchmarks/gguf_advise.py [--model smollm2-135m] [--by block] [--chunks 2] [--windows 16]
                                     [--suite-limit 25] [--imatrix none,calibration] [--out DIR] [--reuse] [--report]

Fitting and judging never share text: sensitivities and the computed importance matrix come from the calibration
windows (`--chunks` windows of advise's calibration corpus: CPython docs, standard-library source, MMLU questions);
the held-out KL from `kld` on `--windows` windows of another domain (CoQA stories and DROP passages, olmo:coqa+drop)
against a full store of the baseline (int16 log-probabilities: a 6.1e-4-nat grid), ± the standard error over
windows; the flips from `compare` on the paper's suite (`--suite-limit` items per task, pooled over tasks). Each
recipe and its advised file use the same importance-matrix setting (none, or the one computed for that plan).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import flipscope
from flipscope.attribution.units import UnitKind
from flipscope.metrics.windows import WindowDifference, paired_by_window
from flipscope.runs.advise_gguf import GGUFAdviseSettings, advise_gguf
from flipscope.runs.attribute import AblationSettings
from flipscope.tasks.corpus import HELD_OUT_CORPUS
from flipscope.tasks.suite import PAPER


def files(args: argparse.Namespace, out: Path) -> list[dict[str, object]]:
    """Every recipe and advised file, written; their specs, sizes and how long advice took."""
    rows: list[dict[str, object]] = []
    for setting in args.imatrix.split(","):
        for size in args.sizes.split(","):
            started = time.monotonic()
            plan = out / f"advised-{size}-{setting}.json"
            settings = GGUFAdviseSettings(size_of=size, by=UnitKind(args.by), compute_imatrix=setting == "calibration",
                                          ablation=AblationSettings(chunks=args.chunks, ctx=args.ctx),
                                          eval_windows=(0, 2))  # fmt: skip
            reused = args.reuse and plan.exists()
            if reused:  # a plan an interrupted run left: its advice is not repeated (nor timed)
                doc = json.loads(plan.read_text())
                found = (doc.get("imatrix") or {}).get("file")
            else:
                a = advise_gguf(f"gguf:{args.model}", settings, out=plan)
                found = a.imatrix
            seconds = None if reused else time.monotonic() - started
            imatrix = f",imatrix={found}" if found else ""
            for name, spec in ((f"llama.cpp {size}", f"gguf:{args.model}+ggml:{size}{imatrix}"),
                               (f"advised @ {size}", f"gguf:{args.model}+ggml:plan={plan}")):  # fmt: skip
                path = out / f"{name.replace(' ', '_').replace('@', 'at')}-{setting}.gguf"
                if not (reused and path.exists()):
                    path.unlink(missing_ok=True)  # never an earlier run's file: --out may hold other settings'
                    flipscope.save_gguf(spec, path)
                saved = _saved(path)
                rows.append({"file": name, "imatrix": setting, "path": str(path), **saved,
                             "advise_seconds": seconds if name.startswith("advised") else None})  # fmt: skip
            if reused:
                print(f"{size} / imatrix {setting}: the plan and files in {out} reused", flush=True)
            else:
                print(f"{size} / imatrix {setting}: advised in {seconds:.0f} s, {a.bits_per_weight:.4f} bpw vs "
                      f"{a.budget_bpw:.4f}; calibration-window KL {a.calibration_kl:.4f}", flush=True)  # fmt: skip
    return rows


def _saved(path: Path) -> dict[str, object]:
    from flipscope.compress.gguf_types import total_bits
    from flipscope.models.gguf_quantize import tensors_of

    tensors = tensors_of(path)
    return {"bytes": path.stat().st_size, "bpw": total_bits(tensors) / sum(t.weights for t in tensors)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sizes", default="Q3_K_M,Q4_K_M,Q5_K_M")
    parser.add_argument("--imatrix", default="none,calibration")
    parser.add_argument("--by", default="block")
    parser.add_argument("--chunks", type=int, default=2, help="calibration windows")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--windows", type=int, default=16, help="held-out windows for kld")
    parser.add_argument("--suite-limit", type=int, default=25, help="items per paper-suite task (0: no suite)")
    parser.add_argument("--out", default="gguf-advise-bench")
    parser.add_argument("--reuse", action="store_true", help="keep the plans and files an earlier run left in --out")
    parser.add_argument("--report", action="store_true", help="print the tables again from --out, measuring nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report:
        measure(args, out)
    report(out)


def measure(args: argparse.Namespace, out: Path) -> None:
    """Write every file, measure them all with kld and compare, and keep what the tables need in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = files(args, out)
    specs = [f"gguf:{r['path']}" for r in rows]
    started = time.monotonic()
    flipscope.kld(f"gguf:{args.model}", specs, corpus=HELD_OUT_CORPUS, ctx=args.ctx, max_windows=args.windows,
                  store="full", out=out / "kld")  # fmt: skip
    print(f"kld on held-out text: {time.monotonic() - started:.0f} s", flush=True)
    flips: dict[str, tuple[int, int]] = {}
    if args.suite_limit:
        started = time.monotonic()
        c = flipscope.compare(f"gguf:{args.model}", specs, tasks=list(PAPER), limit=args.suite_limit,
                              out=out / "compare")  # fmt: skip
        print(f"compare on the paper suite: {time.monotonic() - started:.0f} s", flush=True)
        for spec in specs:
            per = c.summary[spec]
            flips[spec] = (sum(s.flips_c2i + s.flips_i2c for s in per.values()), sum(s.n for s in per.values()))
    command = (f"benchmarks/gguf_advise.py --model {args.model} --sizes {args.sizes} --imatrix {args.imatrix} "
               f"--by {args.by} --chunks {args.chunks} --ctx {args.ctx} --windows {args.windows} "
               f"--suite-limit {args.suite_limit}")  # fmt: skip
    about = (f"held-out KL on {args.windows} windows of {args.ctx} tokens of {HELD_OUT_CORPUS} (± SE over windows; "
             f"full int16 store); flips pooled over {', '.join(PAPER)} ({args.suite_limit} items each)")  # fmt: skip
    table = {"command": command, "about": about, "rows": rows, "specs": specs, "flips": flips}
    (out / "table.json").write_text(json.dumps(table, indent=2, default=str))


def report(out: Path) -> None:
    """The README's tables from a measured ``out``: each file, then each advised file against its recipe, paired by
    held-out window (the same windows, so the windows' shared difficulty cancels)."""
    from flipscope.report.kld_table import load_kld_run
    from flipscope.store.kld_run import read_kld_run

    table = json.loads((out / "table.json").read_text())
    rows, specs, flips = table["rows"], table["specs"], table["flips"]
    summary = load_kld_run(out / "kld").summary
    print(f"`{table['command']}`: {table['about']}")
    print()
    print("| file | imatrix | size MiB | bpw | held-out KL ± se | same-top % | suite flips % |")
    print("|---|---|---|---|---|---|---|")
    for r, spec in zip(rows, specs, strict=True):
        s = summary[spec]
        flip = "–"
        if spec in flips:
            flip = f"{100 * flips[spec][0] / flips[spec][1]:.1f} ({flips[spec][0]}/{flips[spec][1]})"
        kl = f"{s.kl_mean.value:.4f} ± {s.kl_mean.err:.4f}"
        print(f"| {r['file']} | {r['imatrix']} | {r['bytes'] / 2**20:.2f} | {r['bpw']:.3f} | {kl} | "
              f"{100 * s.same_top.value:.1f} | {flip} |")  # fmt: skip
    frame = read_kld_run(out / "kld")[1]
    print()
    print(
        "| size of | imatrix | advised − recipe KL ± se (paired by window) | change | advised lower in "
        "| flips advised / recipe |"
    )
    print("|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        recipe, advised = specs[i], specs[i + 1]
        d = _paired(frame, advised, recipe)
        base = summary[recipe].kl_mean.value
        flip = f"{flips[advised][0]} / {flips[recipe][0]}" if advised in flips else "–"
        print(f"| {rows[i]['file'].removeprefix('llama.cpp ')} | {rows[i]['imatrix']} | {d.mean:+.4f} ± {d.err:.4f} | "
              f"{100 * d.mean / base:+.0f}% | {d.lower} of {d.windows} windows | {flip} |")  # fmt: skip


def _paired(frame: Any, a: str, b: str) -> WindowDifference:
    """KL of candidate ``a`` − candidate ``b`` on the positions both scored, paired by window."""

    keys = ["window", "position"]
    both = frame[frame.candidate == a][[*keys, "kl"]].merge(frame[frame.candidate == b][[*keys, "kl"]], on=keys)
    return paired_by_window(both.window.to_numpy(), both.kl_x.to_numpy(), both.kl_y.to_numpy())


if __name__ == "__main__":
    main()
