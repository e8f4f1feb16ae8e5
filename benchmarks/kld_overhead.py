"""What `flipscope kld` adds on top of the candidate's own forward passes, measured side by side in one run.

Each phase runs in a fresh process (so its peak RSS is its own), on the same candidate and the same windows:

- bare: load the candidate, then one plain forward pass (full logits) per window;
- kld: ``flipscope.kld`` for that candidate against a compact baseline store built beforehand (forward, KL both
  ways, Δp, agreement, statistics, run directory).

Prints the wall time of each, the overhead of kld over bare, peak RSS, and bytes per position of the compact store
next to llama.cpp's format. Run:

    python benchmarks/kld_overhead.py --chunks 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def bare(baseline: str, candidate: str, chunks: int, ctx: int) -> None:
    import torch

    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks.corpus import load_corpus, make_windows

    start = time.perf_counter()
    backend = load_backend(parse_spec(baseline + candidate), LoadOptions(device="cpu"))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    windows = make_windows(
        tok.encode(load_corpus().text, add_special_tokens=False), ctx, bos_id=None, max_windows=chunks
    )
    with torch.no_grad():
        for w in windows:
            model(input_ids=torch.tensor([w.ids]), use_cache=False)
    report(time.perf_counter() - start, {})


def full(baseline: str, candidate: str, chunks: int, ctx: int, cache: str, out: str) -> None:
    import flipscope

    start = time.perf_counter()
    result = flipscope.kld(baseline, [candidate], ctx=ctx, max_windows=chunks, cache_dir=cache, out=out, device="cpu")
    report(
        time.perf_counter() - start,
        {"store": result.run.store, "kl": result.summary[baseline + candidate].kl_mean.value},
    )


def report(seconds: float, extra: dict[str, object]) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, **extra}))


def phase(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="bundled:smollm2-135m")
    parser.add_argument("--candidate", default="+rtn:w4g64")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--phase", choices=["bare", "kld", "store"], default=None)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    common = [args.baseline, args.candidate, str(args.chunks), str(args.ctx)]
    if args.phase == "bare":
        bare(args.baseline, args.candidate, args.chunks, args.ctx)
        return
    if args.phase in ("kld", "store"):
        full(args.baseline, args.candidate, args.chunks, args.ctx, args.cache, tempfile.mkdtemp())
        return
    with tempfile.TemporaryDirectory() as cache:
        phase("--phase", "store", "--cache", cache, *flags(common))  # builds the baseline store (not timed)
        runs = []
        for _ in range(2):  # alternate, twice each, and keep each phase's best
            runs.append(("bare", phase("--phase", "bare", *flags(common))))
            runs.append(("kld", phase("--phase", "kld", "--cache", cache, *flags(common))))
    best = {name: min(float(r["seconds"]) for n, r in runs if n == name) for name in ("bare", "kld")}  # type: ignore[arg-type]
    rss = {name: max(float(r["peak_rss_mb"]) for n, r in runs if n == name) for name in ("bare", "kld")}  # type: ignore[arg-type]
    store = next(r for n, r in runs if n == "kld")["store"]
    assert isinstance(store, dict)
    print(f"{args.baseline}{args.candidate}, {args.chunks} windows of {args.ctx} tokens (load + forward in both)")
    print(f"bare forward passes : {best['bare']:7.1f} s   peak RSS {rss['bare']:6.0f} MB")
    print(f"flipscope kld       : {best['kld']:7.1f} s   peak RSS {rss['kld']:6.0f} MB")
    print(f"overhead of kld     : {best['kld'] / best['bare'] - 1:+.1%}  (target ≤ +10%)")
    ratio = store["bytes_per_position"] / store["llama_cpp_bytes_per_position"]
    print(f"compact store       : {store['bytes_per_position']:.0f} bytes/position vs llama.cpp "
          f"{store['llama_cpp_bytes_per_position']} ({ratio:.2%}; target ≤ 2%)")  # fmt: skip


def flags(common: list[str]) -> list[str]:
    baseline, candidate, chunks, ctx = common
    return ["--baseline", baseline, "--candidate", candidate, "--chunks", chunks, "--ctx", ctx]


if __name__ == "__main__":
    main()
