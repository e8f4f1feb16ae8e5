"""`flipscope advise` twice on the same model, widths and windows with two budgets: the second run reads the first's
sensitivities from the cache instead of measuring them again (issue 30, goal 4).

Each run is a fresh process on a flipscope cache that starts empty but for your models and wheels (linked, so
nothing is fetched); the baseline's corpus store is built in the first run and kept for the second. The bundled
SmolLM2-135M, ``--by block`` (30 units), RTN at 3, 4 and 8 bits with group 64, ``--chunks`` calibration windows of
``--ctx`` tokens; the whole process is timed. The second run no longer spends the sensitivities nor the baseline's
corpus stores (calibration and evaluation windows), which the first built.
Run:

    python benchmarks/advise_cache.py --chunks 4 --ctx 256
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def run(cache: str, out: str, target: str, chunks: int, ctx: int) -> float:
    argv = ["flipscope", "advise", "bundled:smollm2-135m", "--bits", "3,4,8", "--group", "64", "--by", "block",
            "--target-bits", target, "--chunks", str(chunks), "--ctx", str(ctx), "--device", "cpu",
            "--out", out]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "FLIPSCOPE_CACHE": cache})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=256)
    args = parser.parse_args()
    from flipscope.plumbing.cache import cache_root

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        for shared in ("models", "wheels", "extracted", "hashes"):  # the bundled model: no download
            if (cache_root() / shared).exists():
                os.symlink(cache_root() / shared, os.path.join(cache, shared))
        first = run(cache, f"{out}/a.json", "5.0", args.chunks, args.ctx)
        second = run(cache, f"{out}/b.json", "4.5", args.chunks, args.ctx)
    print(f"advise bundled:smollm2-135m --by block --bits 3,4,8 --group 64, {args.chunks} windows of {args.ctx} "
          f"tokens, whole process ({sys.platform}, {os.cpu_count()} cores)")  # fmt: skip
    print(f"{'run':<56} {'seconds':>8}")
    print(f"{'first (--target-bits 5.0: stores, 30 × 3 sensitivities)':<56} {first:>8.1f}")
    print(f"{'second (--target-bits 4.5: sensitivities, stores cached)':<56} {second:>8.1f}")
    print(f"second / first: {second / first:.2f} ({first / second:.1f}× faster)")


if __name__ == "__main__":
    main()
