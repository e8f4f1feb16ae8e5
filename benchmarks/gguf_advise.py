"""Issue 28's evidence: llama.cpp's own recipes (Q3_K_M, Q4_K_M, Q5_K_M) against per-tensor files advised by
`flipscope advise gguf:` at each recipe's size, without and with an importance matrix, all written by llama.cpp's
quantizer and all measured through llama.cpp (`gguf:` files).

    python benchmarks/gguf_advise.py [--model smollm2-135m] [--by block] [--chunks 2] [--windows 16]
                                     [--suite-limit 25] [--imatrix none,calibration] [--out DIR]

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

import flipscope
from flipscope.attribution.units import UnitKind
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
            a = advise_gguf(f"gguf:{args.model}", settings, out=plan)
            seconds = time.monotonic() - started
            imatrix = f",imatrix={a.imatrix}" if a.imatrix else ""
            for name, spec in ((f"llama.cpp {size}", f"gguf:{args.model}+ggml:{size}{imatrix}"),
                               (f"advised @ {size}", f"gguf:{args.model}+ggml:plan={plan}")):  # fmt: skip
                path = out / f"{name.replace(' ', '_').replace('@', 'at')}-{setting}.gguf"
                path.unlink(missing_ok=True)  # never an earlier run's file: --out may be reused with other settings
                flipscope.save_gguf(spec, path)
                saved = _saved(path)
                rows.append({"file": name, "imatrix": setting, "path": str(path), **saved,
                             "advise_seconds": seconds if name.startswith("advised") else None})  # fmt: skip
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
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = files(args, out)
    specs = [f"gguf:{r['path']}" for r in rows]
    started = time.monotonic()
    k = flipscope.kld(f"gguf:{args.model}", specs, corpus=HELD_OUT_CORPUS, ctx=args.ctx, max_windows=args.windows,
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
    (out / "table.json").write_text(json.dumps({"rows": rows, "flips": flips}, indent=2, default=str))
    print()
    print(f"`benchmarks/gguf_advise.py --model {args.model} --by {args.by} --chunks {args.chunks} --windows "
          f"{args.windows} --suite-limit {args.suite_limit}`: held-out KL on {args.windows} windows of {args.ctx} "
          f"tokens of {HELD_OUT_CORPUS} (± SE over windows; full int16 store); flips pooled over "
          f"{', '.join(PAPER)} ({args.suite_limit} items each)")  # fmt: skip
    print()
    print("| file | imatrix | size MiB | bpw | held-out KL ± se | same-top % | suite flips % |")
    print("|---|---|---|---|---|---|---|")
    for r, spec in zip(rows, specs, strict=True):
        s = k.summary[spec]
        flip = "–"
        if spec in flips:
            flip = f"{100 * flips[spec][0] / flips[spec][1]:.1f} ({flips[spec][0]}/{flips[spec][1]})"
        size, bpw = int(str(r["bytes"])) / 2**20, float(str(r["bpw"]))
        kl = f"{s.kl_mean.value:.4f} ± {s.kl_mean.err:.4f}"
        print(
            f"| {r['file']} | {r['imatrix']} | {size:.2f} | {bpw:.3f} | {kl} | {100 * s.same_top.value:.1f} | {flip} |"
        )


if __name__ == "__main__":
    main()
