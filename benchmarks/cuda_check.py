"""One prepared check of flipscope's CUDA paths, for a machine with a GPU (it needs no download).

On a tiny random Llama built here (as in the tests), every on-the-fly method that runs on the model's device is
applied on CPU and on CUDA, in float32; the per-option log-likelihoods of both devices must agree, and the answers
must match. Then the CUDA runs in float16 and bfloat16 must be finite and close, and `kld` in live mode must agree
between devices. Prints one JSON object; exits non-zero if a check fails.

Then, on the bundled SmolLM2-135M in bfloat16 on the GPU, the tools side by side through the CPU benchmarks' own
scripts (same items, same boundaries, the bare forward or decode step as the limit): multiple choice against
lm-eval's ``hf`` model (``mcq_throughput.py``: throughput and both tools' accuracy), generation against lm-eval's
``generate_until`` (``gen_throughput.py``: tokens/s and identical outputs), and ``kld`` against the bare forward
(``kld_overhead.py``). ``--no-tools`` skips them; ``FLIPSCOPE_CHECK_DEVICE=cpu`` dry-runs everything on the CPU.

    PYTHONPATH=src:tests python benchmarks/cuda_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
#: The CPU benchmarks run on the GPU, at the README's sizes: (script, arguments).
TOOLS = (
    ("mcq_throughput.py", ("--limit", "48", "--no-cli")),
    ("gen_throughput.py", ("--prompts", "32", "--max-new-tokens", "128", "--batch-size", "8")),
    ("kld_overhead.py", ("--chunks", "16")),
)

METHODS = ["", "+rtn:w4g16", "+gptq:w4g16,act", "+awq:w4g16", "+smoothquant:a0.5", "+kv:int4", "+wanda:0.5",
           "+2:4", "+noise:0.05", "+drop:last1"]  # fmt: skip


def main() -> int:
    import torch

    import flipscope
    from conftest import make_tiny_llama
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.tasks import load_task
    from flipscope.tasks.items import PromptFormat, build_requests

    gpu = os.environ.get("FLIPSCOPE_CHECK_DEVICE", "cuda")  # "cpu" for a dry run of this script
    assert gpu == "cpu" or torch.cuda.is_available(), "no CUDA device"
    work = Path(tempfile.mkdtemp())
    model_dir = make_tiny_llama(work / "tiny")
    rows = [{"id": f"q{i}", "question": f"Which planet is number {i % 4 + 1}?", "subject": "astro",
             "choices": ["Mercury", "Venus", "Earth", "Mars"], "answer": i % 4} for i in range(24)]  # fmt: skip
    task_file = work / "planets.jsonl"
    task_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task(str(task_file), fewshot=0, limit=None, seed=0)
    requests = build_requests(task, PromptFormat.CLOZE, 0)
    name = torch.cuda.get_device_name(0) if gpu == "cuda" else "cpu (dry run)"
    report: dict[str, object] = {"device": name, "torch": torch.__version__}
    failures = []
    for method in METHODS:
        spec = parse_spec(f"hf:{model_dir}{method}")
        scores = {}
        for device, dtype in (("cpu", "float32"), (gpu, "float32"), (gpu, "float16"), (gpu, "bfloat16")):
            start = time.perf_counter()
            backend = load_backend(spec, LoadOptions(device=device, dtype=dtype))
            got = np.array([s.logprobs for s in backend.score(requests)])  # [items, options]
            backend.close()
            scores[(device, dtype)] = (got, time.perf_counter() - start)
        ref = scores[("cpu", "float32")][0]
        row = {}
        for (device, dtype), (got, seconds) in scores.items():
            diff = float(np.abs(got - ref).max())
            same = float((got.argmax(1) == ref.argmax(1)).mean())
            row[f"{device}/{dtype}"] = {"max_abs_diff": diff, "same_answers": same, "seconds": round(seconds, 2)}
            # AWQ's grid search picks discrete scales/clips: a near-tie can resolve differently on another device
            limit = (0.1 if "awq" in method else 2e-3) if dtype == "float32" else 0.5
            if not np.isfinite(got).all() or diff > limit * max(1.0, float(np.abs(ref).max()) / 10):
                failures.append(f"{method or 'base'} {device}/{dtype}: max |Δ| {diff:.3g}")
        report[method or "base"] = row
    corpus = work / "text.txt"
    corpus.write_text(" ".join(rows_text for rows_text in [r["question"] for r in rows]) * 20)
    kl = {}
    for device in ("cpu", gpu):
        settings = flipscope.KldSettings(corpus=str(corpus), ctx=64, max_windows=4, store="live", device=device,
                                         out=work / f"kld-{device}", cache_dir=work / "cache")  # fmt: skip
        result = flipscope.kld(f"hf:{model_dir}", ["+rtn:w4g16", "+kv:int4"], settings)
        kl[device] = {k: v.kl_mean.value for k, v in result.summary.items()}
    report["kld_live_mean_kl"] = kl
    for label, value in kl["cpu"].items():
        if abs(kl[gpu][label] - value) > 1e-3 * max(1.0, value):
            failures.append(f"kld {label}: cpu {value:.6g} vs {gpu} {kl[gpu][label]:.6g}")
    report["failures"] = failures
    print(json.dumps(report, indent=1), flush=True)
    if "--no-tools" not in sys.argv:
        failures += tools(gpu, "bfloat16" if gpu != "cpu" else "float32")
    return 1 if failures else 0


def tools(device: str, dtype: str) -> list[str]:
    """The benchmark scripts on ``device`` in ``dtype``; their output printed as it comes, failures named."""
    failed = []
    for script, argv in TOOLS:
        extra = ("--device", device) if script == "kld_overhead.py" else ("--device", device, "--dtype", dtype)
        print(f"\n## python benchmarks/{script} {' '.join((*argv, *extra))}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *argv, *extra]).returncode != 0:
            failed.append(f"{script} on {device}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
