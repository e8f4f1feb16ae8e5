"""Issue 27's `kld --ray`, measured side by side in one run: the same `kld` (bundled SmolLM2-135M against
round-to-nearest copies, on the default corpus) run by one `kld` process on one thread, and by `kld --ray` on a
cluster of two one-CPU nodes started on this machine (`ray.cluster_utils.Cluster`), with one candidate and with two.

    python benchmarks/ray_kld.py [--windows 16] [--ctx 512]

Same boundaries for every `kld` row: the command line `flipscope kld ... --no-cache` from start to exit (imports,
the models' loads and compression, the baseline's compact store, the candidates' columns, the run directory). The
cluster is started before (its start-up printed on its own). The limits beside them, from each model's bare forward
passes over the windows (`corpus_logprobs`, one thread, loading excluded): for one process their sum; for two nodes
the larger of the baseline's alone (a candidate's windows need the baseline's store of them) and half the sum (all
the work spread over two nodes). Ray's actors get `OMP_NUM_THREADS=1` from their one CPU; the one-process run is
given `OMP_NUM_THREADS=1`. On 2 cores the driver and Ray's own processes share them with the two nodes. Each Ray
run's per-position columns are compared with the one-process run's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from ray_compare import same, two_nodes  # run as python benchmarks/ray_kld.py

from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.passes.kld import make_plan
from flipscope.tasks.corpus import load_corpus

BASELINE = "bundled:smollm2-135m"
CANDIDATES = ["+rtn:w4g64", "+rtn:w3g64"]


def forward_seconds(spec: str, args: argparse.Namespace) -> float:
    """One model's bare forward passes over the windows (one thread; loading excluded)."""
    backend = load_backend(parse_spec(spec), LoadOptions(device="cpu"))
    plan = make_plan(backend, load_corpus(None).text, args.ctx, 0.5, args.windows)
    for _ in backend.corpus_logprobs(plan.windows[:1]):  # warm-up
        pass
    start = time.perf_counter()
    for _ in backend.corpus_logprobs(plan.windows):
        pass
    seconds = time.perf_counter() - start
    backend.close()
    return seconds


def timed_kld(cands: list[str], args: argparse.Namespace, folder: Path, name: str, *extra: str
              ) -> tuple[float, pd.DataFrame]:  # fmt: skip
    """``flipscope kld`` as a user runs it, timed from start to exit; its per-position columns."""
    command = ["flipscope", "kld", BASELINE, *cands, "--chunks", str(args.windows), "--ctx", str(args.ctx),
               "--device", "cpu", "--out", str(folder / name), "--no-cache", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, pd.read_parquet(folder / name / "positions.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    os.environ["FLIPSCOPE_CACHE"] = str(folder / "cache")  # the bundled model converted once, before any timed row
    base_s = forward_seconds(BASELINE, args)
    cand_s = [forward_seconds(BASELINE + c, args) for c in CANDIDATES]
    rows: list[tuple[str, str, float, str]] = []
    cluster, started = two_nodes()
    try:
        for n in (1, 2):
            cands = CANDIDATES[:n]
            rows.append((f"{n}", "bare forward passes, one thread (the limit for one process)",
                         base_s + sum(cand_s[:n]), "—"))  # fmt: skip
            rows.append((f"{n}", "bare forward passes over two nodes: max(baseline, sum / 2) (the limit on two nodes)",
                         max(base_s, (base_s + sum(cand_s[:n])) / 2), "—"))  # fmt: skip
            local_s, local = timed_kld(cands, args, folder, f"local{n}")
            rows.append((f"{n}", "`kld`, one process, one thread", local_s, "—"))
            ray_s, on_ray = timed_kld(cands, args, folder, f"ray{n}", "--ray", cluster.address)
            overhead = f" ({(ray_s - local_s) / local_s:+.0%} against one process)"
            rows.append((f"{n}", f"`kld --ray`, two one-CPU nodes{overhead}", ray_s, same(local, on_ray)))
    finally:
        cluster.shutdown()
    command = f"python benchmarks/ray_kld.py --windows {args.windows} --ctx {args.ctx}"
    print(f"\n`{command}` ({os.cpu_count()} cores; the two-node cluster started in {started:.1f} s, not counted)\n")
    print("| candidates | run | wall time | positions against one process |")
    print("|---|---|---|---|")
    for n, name, seconds, verdict in rows:
        print(f"| {n} | {name} | {seconds:.1f} s | {verdict} |")


if __name__ == "__main__":
    main()
