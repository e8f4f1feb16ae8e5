"""The README's advise table from stored runs: a `kld` run on held-out text (corpus KL per candidate with its error bar
over windows, and each candidate minus the reference paired by window) and, optionally, a `compare` run on MMLU
(flips). Candidates are named by a suffix of their spec (``q4km.json``, ``+rtn:w4g64``).

    python benchmarks/advise_table.py KLD_RUN [--compare COMPARE_RUN] --reference q4km.json NAME=SUFFIX ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flipscope.compress.plan import bits_per_weight
from flipscope.metrics.windows import mean_by_window, paired_by_window
from flipscope.store.kld_run import read_kld_run


def _bits(spec: str) -> str:
    """Bits per weight: a plan's recorded average, or uniform RTN's code + scale (every SmolLM2 layer is ≥ 576 wide)."""
    if "+plan:" in spec:
        return f"{json.loads(Path(spec.split('+plan:', 1)[1]).read_text())['avg_bits']:.3f}"
    if "+rtn:w" in spec:
        bits, _, group = spec.split("+rtn:w", 1)[1].partition("g")
        return f"{bits_per_weight(int(bits), int(group), 576):.3f}"
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kld")
    parser.add_argument("--compare")
    parser.add_argument("--task", default="mmlu")
    parser.add_argument("--reference", required=True, help="suffix of the candidate the others are paired with")
    parser.add_argument("candidates", nargs="+", help="NAME=SUFFIX, in table order")
    args = parser.parse_args()
    run, frame = read_kld_run(Path(args.kld))
    labels = {c["spec"] for c in run.candidates}

    def label(suffix: str) -> str:
        (found,) = [spec for spec in labels if spec.endswith(suffix)]
        return found

    def columns(spec: str) -> tuple[np.ndarray, np.ndarray]:
        rows = frame[frame.candidate == spec].sort_values(["window", "position"])
        return rows.window.to_numpy(), rows.kl.to_numpy(np.float64)

    summary = json.loads((Path(args.compare) / "run.json").read_text())["summary"] if args.compare else {}
    s = run.settings
    print(f"corpus {s.corpus} (sha256 {s.corpus_sha256[:12]}…), {s.windows} windows of {s.ctx} tokens, "
          f"{s.positions} positions; KL(B‖C) {s.kl_forward}; ± is the standard error over windows")  # fmt: skip
    print()
    ref = label(args.reference)
    head = ["candidate", "bits/weight", "corpus KL ± SE (windows)", f"− {args.reference}, paired by window"]
    if summary:
        head += [f"{args.task} flips % (C→I / I→C)", "all-flips %", "choice KL"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for pair in args.candidates:
        name, _, suffix = pair.partition("=")
        spec = label(suffix)
        windows, kl = columns(spec)
        mean, _ = mean_by_window(windows, kl)
        if spec == ref:
            versus = "—"
        else:
            ref_windows, ref_kl = columns(ref)
            assert (ref_windows == windows).all()
            d = paired_by_window(windows, kl, ref_kl)
            versus = f"{d.mean:+.4f} ± {d.err:.4f}, lower in {d.lower} of {d.windows}"
        row = [name, _bits(spec), f"{mean.mean:.4f} ± {mean.err:.4f}", versus]
        if summary:
            t = summary[spec][args.task]
            row += [f"{100 * t['flips']:.1f} ({t['flips_c2i']} / {t['flips_i2c']})", f"{100 * t['all_flips']:.1f}",
                    f"{t['choice_kl_mean']:.3f}"]  # fmt: skip
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
