"""`flipscope advise` speed (issue 30, goal 4): ablations recomputed from their first changed block, and a second
budget that measures nothing again — each against the run before it, side by side in one run.

Three runs of ``advise`` through its Python API, each a fresh process, on the bundled SmolLM2-135M, ``--by block``
(30 units), RTN at 3, 4 and 8 bits with group 64, ``--chunks`` calibration windows of ``--ctx`` tokens (evaluation
windows as advise's defaults):

- full forward: every ablation runs the whole decoder (``AblationSettings(resume=False)``), from an empty cache;
- from the first changed block: the same from an empty cache, block inputs captured once (the default);
- second budget: another ``--target-bits`` on the cache the second run left — sensitivities and the baseline's
  corpus stores are read, not measured.

The flipscope cache of each run starts empty but for your models and wheels (linked: nothing is fetched). Wall time
of the whole process; the plans of the first two must be the same (printed). Run:

    python benchmarks/advise_speed.py --chunks 4 --ctx 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def advise_once(target: float, resume: bool, chunks: int, ctx: int, out: str) -> None:
    """Phase: one advise run (in this process)."""
    from flipscope.attribution.units import UnitKind
    from flipscope.runs.advise import AdviseSettings, advise
    from flipscope.runs.attribute import AblationSettings

    ablation = AblationSettings(chunks=chunks, ctx=ctx, device="cpu", resume=resume)
    settings = AdviseSettings(bits=(3, 4, 8), group_sizes=(64,), by=UnitKind.BLOCK, target_bits=target,
                              ablation=ablation)  # fmt: skip
    advise("bundled:smollm2-135m", settings, out=out)


def timed(cache: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True,
                   env={**os.environ, "FLIPSCOPE_CACHE": cache})  # fmt: skip
    return time.perf_counter() - start


def fresh_cache(root: str) -> str:
    from flipscope.plumbing.cache import cache_root

    cache = tempfile.mkdtemp(dir=root)
    for shared in ("models", "wheels", "extracted", "hashes"):  # the bundled model: no download
        if (cache_root() / shared).exists():
            os.symlink(cache_root() / shared, os.path.join(cache, shared))
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--phase", nargs=3, default=None, help=argparse.SUPPRESS)  # target, resume (0/1), out
    args = parser.parse_args()
    if args.phase:
        target, resume, out = args.phase
        advise_once(float(target), resume == "1", args.chunks, args.ctx, out)
        return
    sizes = ("--chunks", str(args.chunks), "--ctx", str(args.ctx))
    with tempfile.TemporaryDirectory() as root:
        plans = [os.path.join(root, f"{name}.json") for name in ("full", "resumed", "second")]
        full = timed(fresh_cache(root), "5.0", "0", plans[0], *sizes)
        kept = fresh_cache(root)
        resumed = timed(kept, "5.0", "1", plans[1], *sizes)
        second = timed(kept, "4.5", "1", plans[2], *sizes)
        same = json.loads(Path(plans[0]).read_text())["layers"] == json.loads(Path(plans[1]).read_text())["layers"]
    print(f"advise bundled:smollm2-135m --by block --bits 3,4,8 --group 64, {args.chunks} calibration windows of "
          f"{args.ctx} tokens, whole process, {os.cpu_count()} CPU cores")  # fmt: skip
    print(f"{'run':<62} {'seconds':>8} {'speed-up':>9}")
    print(f"{'full forward per ablation (--target-bits 5.0, empty cache)':<62} {full:>8.1f} {'1.00x':>9}")
    print(f"{'from the first changed block (--target-bits 5.0, empty cache)':<62} {resumed:>8.1f} "
          f"{full / resumed:>8.2f}x")  # fmt: skip
    print(f"{'second budget (--target-bits 4.5, sensitivities cached)':<62} {second:>8.1f} {full / second:>8.2f}x")
    print(f"same plan from the full forward and from the first changed block: {same}")


if __name__ == "__main__":
    main()
