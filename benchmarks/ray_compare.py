"""Issue 27's Ray placement, measured side by side in one run: the same comparison (bundled SmolLM2-135M against
round-to-nearest copies) run by one `compare` process on one thread, and by `compare --ray` on a cluster of two
one-CPU nodes started on this machine (`ray.cluster_utils.Cluster`), with one candidate and with two.

    python benchmarks/ray_compare.py [--items 100] [--task mmlu]

Same boundaries for every `compare` row: the command line `flipscope compare ...` from start to exit with an empty
pass cache (Python's imports, the models' loads and compression, the passes, storing them, the run directory). The
cluster is started before (its start-up is printed on its own, as a cluster users join is already running). The
limit beside them: each model's bare forward passes (`backend.score` over the same requests, in this process, one
thread, loading excluded), summed — one process can do no better — and, for two nodes, the baseline's followed by
the slower candidate's (the candidates side by side once the baseline is done; a candidate needs the baseline's
rows). Ray's actors get `OMP_NUM_THREADS=1` from their one CPU; the one-process run is given `OMP_NUM_THREADS=1`.
On 2 cores the Ray driver and Ray's own processes share them with the two nodes. Each Ray run's records are
compared with the one-process run's (they should be the same numbers).
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
from ray import cluster_utils

from flipscope.models import LoadOptions, load_backend, parse_spec
from flipscope.tasks import PromptFormat, build_requests, load_task

BASELINE = "bundled:smollm2-135m"
CANDIDATES = ["+rtn:w4g64", "+rtn:w3g64"]


def forward_seconds(spec: str, requests: list) -> float:
    """One model's bare forward passes over ``requests`` (one thread; loading excluded)."""
    backend = load_backend(parse_spec(spec), LoadOptions(device="cpu", batch_size=8))
    backend.score(requests[:1])  # warm-up
    start = time.perf_counter()
    backend.score(requests)
    seconds = time.perf_counter() - start
    backend.close()
    return seconds


def timed_compare(cands: list[str], args: argparse.Namespace, folder: Path, name: str, *extra: str
                  ) -> tuple[float, pd.DataFrame]:  # fmt: skip
    """``flipscope compare`` as a user runs it, timed from start to exit; its records."""
    command = ["flipscope", "compare", BASELINE, *cands, "--tasks", args.task, "--limit", str(args.items), "--device",
               "cpu", "--batch-size", "8", "--out", str(folder / name), "--cache-dir", str(folder / f"cache-{name}"),
               *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    frame = pd.read_parquet(folder / name / "records.parquet").sort_values(["model", "task", "item_id"])
    return seconds, frame.reset_index(drop=True)


def same(a: pd.DataFrame, b: pd.DataFrame) -> str:
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError:
        return "**differ**"
    return "identical"


def two_nodes() -> tuple[cluster_utils.Cluster, float]:
    """A Ray cluster of two one-CPU nodes on this machine, and the seconds it took to start."""
    start = time.perf_counter()
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--task", default="mmlu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    requests = build_requests(load_task(args.task, limit=args.items), PromptFormat.LETTER, 0)
    base_s = forward_seconds(BASELINE, requests)  # also converts the bundled model once, before any timed row
    cand_s = [forward_seconds(BASELINE + c, requests) for c in CANDIDATES]
    rows: list[tuple[str, str, float, str]] = []
    cluster, started = two_nodes()
    try:
        for n in (1, 2):
            cands = CANDIDATES[:n]
            rows.append((f"{n}", "bare forward passes, one thread (the limit for one process)",
                         base_s + sum(cand_s[:n]), "—"))  # fmt: skip
            if n == 2:
                rows.append((f"{n}", "bare forward passes, the candidates side by side (the limit on two nodes)",
                             base_s + max(cand_s[:n]), "—"))  # fmt: skip
            local_s, local = timed_compare(cands, args, folder, f"local{n}")
            rows.append((f"{n}", "`compare`, one process, one thread", local_s, "—"))
            ray_s, on_ray = timed_compare(cands, args, folder, f"ray{n}", "--ray", cluster.address)
            overhead = f" ({(ray_s - local_s) / local_s:+.0%} against one process)"
            rows.append((f"{n}", f"`compare --ray`, two one-CPU nodes{overhead}", ray_s, same(local, on_ray)))
    finally:
        cluster.shutdown()
    options = sum(len(r.continuations) for r in requests)
    command = f"python benchmarks/ray_compare.py --items {args.items} --task {args.task}"
    print(f"\n`{command}` ({len(requests)} requests, {options} options per model; {os.cpu_count()} cores; "
          f"the two-node cluster started in {started:.1f} s, not counted)\n")  # fmt: skip
    print("| candidates | run | wall time | records against one process |")
    print("|---|---|---|---|")
    for n, name, seconds, verdict in rows:
        print(f"| {n} | {name} | {seconds:.1f} s | {verdict} |")


if __name__ == "__main__":
    main()
