"""What `flipscope kld` adds on top of the models' own forward passes, measured side by side in one run.

Each phase runs in a fresh process (so its peak RSS is its own), on the same models and the same windows:

- bare: load the model, then one plain evaluation per window — transformers: a forward pass with full logits;
  llama.cpp (``--engine gguf``): a decode with logits at the scored half of the window, as llama-perplexity asks
  for them, read in place through llama-cpp-python. This is the limit;
- kld, candidate: ``flipscope.kld`` for the candidate against a compact baseline store built beforehand (the
  candidate's own stored columns removed first: they would be read back, not measured);
- kld, whole: ``flipscope.kld`` from an empty cache (the baseline's store, then the candidate);
- llama-perplexity (``--engine gguf``, where the binary is on PATH): its baseline pass writing the
  ``--kl-divergence-base`` file, then its ``--kl-divergence`` pass, on the same text and window size.

Prints wall times (best of two), the overheads, peak RSS, and the compact store's bytes per position next to
llama.cpp's format. Run:

    python benchmarks/kld_overhead.py --chunks 16                    # transformers, bundled vs +rtn:w4g64
    python benchmarks/kld_overhead.py --engine gguf --chunks 16      # llama.cpp, F32 vs +ggml:Q4_K_M
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devices import synchronize  # this folder's: the scripts share it

DEFAULTS = {"hf": ("bundled:smollm2-135m", "+rtn:w4g64"), "gguf": ("gguf:smollm2-135m", "+ggml:Q4_K_M")}


def bare(spec: str, chunks: int, ctx: int, device: str = "cpu") -> None:
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks.corpus import load_corpus, make_windows

    start = time.perf_counter()
    backend = load_backend(parse_spec(spec), LoadOptions(device=device, context=ctx))
    ids, bos = backend.encode_corpus(load_corpus().text)  # type: ignore[attr-defined]
    windows = make_windows(ids, ctx, bos_id=bos, max_windows=chunks)
    if spec.startswith("gguf:"):
        for w in windows:
            for _ in backend._scored_logits(list(w.ids), w.first):  # type: ignore[attr-defined]
                pass
    else:
        import torch

        with torch.no_grad():
            for w in windows:
                backend.model(input_ids=torch.tensor([w.ids], device=device), use_cache=False)  # type: ignore[attr-defined]
        synchronize(device)
    report(time.perf_counter() - start, {})


def full(baseline: str, candidate: str, chunks: int, ctx: int, cache: str, out: str, device: str = "cpu") -> None:
    import flipscope

    start = time.perf_counter()
    settings = flipscope.KldSettings(ctx=ctx, max_windows=chunks, cache_dir=cache, out=out, device=device)
    result = flipscope.kld(baseline, [candidate], settings)
    report(
        time.perf_counter() - start,
        {"store": result.run.store, "kl": result.summary[baseline + candidate].kl_mean.value},
    )


def perplexity_tool(baseline: str, candidate: str, chunks: int, ctx: int) -> dict[str, float] | None:
    """llama-perplexity's two passes on the same files and text, where the binary is on PATH."""
    tool = shutil.which("llama-perplexity")
    if tool is None:
        return None
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks.corpus import load_corpus

    paths = []
    for spec in (baseline, baseline + candidate):
        backend = load_backend(parse_spec(spec), LoadOptions(device="cpu"))
        paths.append(backend.info.details["file"])
        backend.close()
    work = Path(tempfile.mkdtemp())
    (work / "text.txt").write_text(load_corpus().text)
    common = [
        "-f",
        str(work / "text.txt"),
        "-c",
        str(ctx),
        "--chunks",
        str(chunks),
        "--kl-divergence-base",
        str(work / "base.kld"),
        "--no-repack",
        "-t",
        "2",
    ]
    times = {}
    for name, model, extra in (("base", paths[0], []), ("kld", paths[1], ["--kl-divergence"])):
        start = time.perf_counter()
        subprocess.run([tool, "-m", str(model), *common, *extra], capture_output=True, check=True)
        times[name] = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return times


def report(seconds: float, extra: dict[str, object]) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, **extra}))


def phase(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=sorted(DEFAULTS), default="hf")
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--candidate", default=None)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--phase", choices=["bare", "kld"], default=None)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (transformers; benchmarks/cuda_check.py)")
    args = parser.parse_args()
    args.baseline = args.baseline or DEFAULTS[args.engine][0]
    args.candidate = args.candidate or DEFAULTS[args.engine][1]
    sizes = ["--chunks", str(args.chunks), "--ctx", str(args.ctx), "--device", args.device]
    if args.phase == "bare":
        bare(args.spec, args.chunks, args.ctx, args.device)
        return
    if args.phase == "kld":
        full(args.baseline, args.candidate, args.chunks, args.ctx, args.cache, tempfile.mkdtemp(), args.device)
        return
    models = ["--baseline", args.baseline, "--candidate", args.candidate, *sizes]
    runs: dict[str, list[dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as cache:
        phase("--phase", "kld", "--cache", cache, *models)  # builds the baseline store (and warms file caches)
        for _ in range(2):  # alternate, twice each, and keep each phase's best
            for spec in (args.baseline, args.baseline + args.candidate):
                runs.setdefault(f"bare {spec}", []).append(phase("--phase", "bare", "--spec", spec, *sizes))
            shutil.rmtree(Path(cache) / "candidates", ignore_errors=True)  # kld keeps the candidate's columns too
            runs.setdefault("kld candidate", []).append(phase("--phase", "kld", "--cache", cache, *models))
            with tempfile.TemporaryDirectory() as empty:
                runs.setdefault("kld whole", []).append(phase("--phase", "kld", "--cache", empty, *models))
    best = {name: min(float(r["seconds"]) for r in rs) for name, rs in runs.items()}  # type: ignore[arg-type]
    rss = {name: max(float(r["peak_rss_mb"]) for r in rs) for name, rs in runs.items()}  # type: ignore[arg-type]
    bare_base, bare_cand = best[f"bare {args.baseline}"], best[f"bare {args.baseline + args.candidate}"]
    print(f"{args.baseline}{args.candidate}, {args.chunks} windows of {args.ctx} tokens (load + evaluation in all)")
    print(f"{'phase':<34} {'seconds':>8} {'peak RSS MB':>12}  overhead vs the bare passes (the limit)")
    rows = [
        ("bare, baseline", bare_base, rss[f"bare {args.baseline}"], ""),
        ("bare, candidate", bare_cand, rss[f"bare {args.baseline + args.candidate}"], ""),
        (
            "flipscope kld, candidate",
            best["kld candidate"],
            rss["kld candidate"],
            f"{best['kld candidate'] / bare_cand - 1:+.1%} (target ≤ +10%)",
        ),
        (
            "flipscope kld, whole (store + cand.)",
            best["kld whole"],
            rss["kld whole"],
            f"{best['kld whole'] / (bare_base + bare_cand) - 1:+.1%}",
        ),
    ]
    tool = perplexity_tool(args.baseline, args.candidate, args.chunks, args.ctx) if args.engine == "gguf" else None
    if tool is not None:
        rows += [
            ("llama-perplexity, base file", tool["base"], 0.0, ""),
            ("llama-perplexity, --kl-divergence", tool["kld"], 0.0, ""),
            (
                "llama-perplexity, whole",
                tool["base"] + tool["kld"],
                0.0,
                f"flipscope whole / llama.cpp whole: {best['kld whole'] / (tool['base'] + tool['kld']):.2f}",
            ),
        ]
    elif args.engine == "gguf":
        print("(llama-perplexity is not on PATH: its column is left out)")
    for name, seconds, mb, note in rows:
        print(f"{name:<34} {seconds:>8.1f} {mb:>12.0f}  {note}")
    store = runs["kld candidate"][0]["store"]
    assert isinstance(store, dict)
    ratio = store["bytes_per_position"] / store["llama_cpp_bytes_per_position"]
    print(
        f"compact store: {store['bytes_per_position']:.0f} bytes/position vs llama.cpp "
        f"{store['llama_cpp_bytes_per_position']} ({ratio:.2%}; target ≤ 2%)"
    )


if __name__ == "__main__":
    main()
