"""`flipscope kld` at long context: peak memory and time from ctx 512 to the bundled model's full 8192 tokens.

For each context length the same number of corpus tokens is scored (``--tokens``, split into ``tokens // ctx``
windows), each phase in a fresh process (``kld_overhead.py``'s phases, so the boundaries are that script's):

- kld, whole: ``flipscope.kld`` from an empty cache — the baseline's compact store, then the candidate;
- bare: load the baseline, then one plain evaluation per window (transformers: a forward pass returning every
  position's logits; llama.cpp: a decode with logits at the scored half) — the time limit.

Memory goal (issue 30): the whole run's peak RSS stays within the model's weights + 1 GiB at every length, i.e. no
[context × vocabulary] float32 array (8192 × 49,152 × 4 B = 1.6 GB for SmolLM2) is held at once. Time: seconds
per thousand scored positions, beside the bare evaluation's per thousand positions (attention grows with the
context, so neither is flat; what matters is that kld's time follows the bare evaluation's). Run:

    python benchmarks/long_context.py --engine hf
    python benchmarks/long_context.py --engine gguf
    python benchmarks/long_context.py --engine gguf --quick     # ctx 512, 2048, 8192 on 8,192 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import kld_overhead  # the phases: one implementation of "bare" and "kld whole"

GIB = 1024.0


def weights_mb(spec: str) -> None:
    """Phase: the model's weights in MB as loaded (transformers: parameters and buffers; llama.cpp: the file)."""
    from flipscope.models import LoadOptions, load_backend, parse_spec

    backend = load_backend(parse_spec(spec), LoadOptions(device="cpu"))
    if spec.startswith("gguf:"):
        size = os.path.getsize(str(backend.info.details["file"]))
    else:
        model = backend.model  # type: ignore[attr-defined]
        size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"weights_mb": size / 2**20, "peak_rss_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=sorted(kld_overhead.DEFAULTS), default="hf")
    parser.add_argument("--tokens", type=int, default=16384, help="corpus tokens per context length")
    parser.add_argument("--ctx", default="512,1024,2048,4096,8192")
    parser.add_argument("--quick", action="store_true", help="ctx 512, 2048, 8192 on 8,192 tokens")
    parser.add_argument("--phase", choices=["weights"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "weights":
        weights_mb(args.spec)
        return
    if args.quick:
        args.tokens, args.ctx = 8192, "512,2048,8192"
    baseline, candidate = kld_overhead.DEFAULTS[args.engine]
    weights = run(__file__, "--phase", "weights", "--spec", baseline)["weights_mb"]
    over = kld_overhead.__file__
    rows = []
    for ctx in (int(c) for c in args.ctx.split(",")):
        windows = max(1, args.tokens // ctx)
        sizes = ["--chunks", str(windows), "--ctx", str(ctx)]
        with tempfile.TemporaryDirectory() as empty:
            kld = run(over, "--phase", "kld", "--cache", empty, "--baseline", baseline, "--candidate", candidate,
                      *sizes)  # fmt: skip
        bare = run(over, "--phase", "bare", "--spec", baseline, *sizes)
        positions = windows * (ctx - min(ctx - 2, ctx - round(ctx * 0.5)))
        rows.append((ctx, windows, positions, kld, bare))
    print(f"{baseline}{candidate} ({args.engine}), {args.tokens} corpus tokens per length, weights {weights:.0f} MB; "
          f"goal: kld peak ≤ weights + 1 GiB = {weights + GIB:.0f} MB")  # fmt: skip
    print(f"{'ctx':>5} {'windows':>7} {'scored':>7} {'kld s':>7} {'kld s/1k':>8} {'bare s':>7} {'bare s/1k':>9} "
          f"{'kld peak MB':>11} {'over weights':>12} {'bare peak MB':>12}")  # fmt: skip
    for ctx, windows, positions, kld, bare in rows:
        per, bare_per = kld["seconds"] / positions * 1000, bare["seconds"] / positions * 1000
        print(f"{ctx:>5} {windows:>7} {positions:>7} {kld['seconds']:>7.1f} {per:>8.2f} {bare['seconds']:>7.1f} "
              f"{bare_per:>9.2f} {kld['peak_rss_mb']:>11.0f} {kld['peak_rss_mb'] - weights:>+12.0f} "
              f"{bare['peak_rss_mb']:>12.0f}")  # fmt: skip
    worst = max(kld["peak_rss_mb"] for *_, kld, _ in rows)
    print(f"goal (kld peak ≤ weights + 1 GiB): {'met' if worst <= weights + GIB else 'not met'} "
          f"(worst {worst:.0f} MB)")  # fmt: skip


def run(script: str, *args: str) -> dict[str, float]:
    """One phase in a fresh process: its last stdout line, as JSON."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    main()
