"""Questions per second on multiple-choice scoring: flipscope vs lm-eval 0.4.13, side by side in one run.

Both score the same MMLU questions with the same prompts (flipscope's cloze and letter formats, 0-shot and
5-shot), the same model folder (the bundled SmolLM2-135M, float32, CPU). lm-eval runs `--model hf` with a local
JSONL task whose context is exactly flipscope's prefix + prompt. Each measurement runs in its own process, so its
peak resident memory is reported too. Model loading is excluded from both timings.

    pip install -e ".[bench]"      # lm-eval==0.4.13
    python benchmarks/mcq_throughput.py                       # 48 questions from 4 MMLU subjects
    python benchmarks/mcq_throughput.py --task mmlu --limit 24  # spread over all 57 subjects
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flipscope.metrics import first_argmax
from flipscope.tasks import PromptFormat, build_requests, load_task


def questions(task_name: str, limit: int, fmt: str, shots: int, seed: int) -> tuple[list, list]:
    task = load_task(task_name, fewshot=5, limit=limit, seed=seed)  # same items for 0- and 5-shot
    return task.items, build_requests(task, PromptFormat(fmt), shots)


def run_flipscope(folder: str, task_name: str, limit: int, fmt: str, shots: int, seed: int, batch_size: int) -> dict:
    from flipscope.models import LoadOptions, parse_spec
    from flipscope.models.hf import HFBackend

    items, requests = questions(task_name, limit, fmt, shots, seed)
    backend = HFBackend.load(parse_spec(f"hf:{folder}"), folder, LoadOptions(device="cpu"))
    start = time.perf_counter()
    scores = backend.score(requests)
    elapsed = time.perf_counter() - start
    correct = sum(first_argmax(s.logprobs) == it.answer for s, it in zip(scores, items, strict=True))
    return {"seconds": elapsed, "n": len(requests), "acc": correct / len(requests)}


def run_lmeval(folder: str, task_name: str, limit: int, fmt: str, shots: int, seed: int, batch_size: int) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    items, requests = questions(task_name, limit, fmt, shots, seed)
    workdir = Path(tempfile.mkdtemp(prefix="lmeval-task-"))
    with (workdir / "data.jsonl").open("w") as fh:
        for item, req in zip(items, requests, strict=True):
            row = {"context": req.prefix + req.prompt, "choices": list(req.continuations), "answer": item.answer}
            fh.write(json.dumps(row) + "\n")
    (workdir / "task.yaml").write_text(
        "task: flipscope_bench\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {workdir / 'data.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        'target_delimiter: ""\n'
        "num_fewshot: 0\n"
        "metric_list:\n  - metric: acc\n"
    )
    lm = HFLM(pretrained=folder, batch_size=batch_size, device="cpu", dtype="float32")
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=["flipscope_bench"], task_manager=TaskManager(include_path=str(workdir))
    )
    elapsed = time.perf_counter() - start
    acc = out["results"]["flipscope_bench"]["acc,none"] if out else float("nan")
    return {"seconds": elapsed, "n": len(requests), "acc": acc}


def worker(args: argparse.Namespace) -> None:
    fn = run_flipscope if args.worker == "flipscope" else run_lmeval
    result = fn(args.folder, args.task, args.limit, args.format, args.shots, args.seed, args.batch_size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(tool: str, folder: str, args: argparse.Namespace, fmt: str, shots: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--folder",
        folder,
        "--task",
        args.task,
        "--limit",
        str(args.limit),
        "--format",
        fmt,
        "--shots",
        str(shots),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{tool} {fmt} {shots}-shot failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        default="mmlu:astronomy,philosophy,prehistory,high_school_psychology",
        help="flipscope task spec; the default shares each subject's few-shot prefix among ~12 questions. "
        "Use `mmlu` for a sample spread over all 57 subjects (about one question per subject at --limit 48)",
    )
    parser.add_argument("--limit", type=int, default=48, help="questions per configuration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="cloze,letter")
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--worker", choices=["flipscope", "lmeval"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="cloze", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.shots = int(args.shots)
        worker(args)
        return
    from flipscope.models.bundled import ensure_local

    folder = str(ensure_local("smollm2-135m"))
    print(
        f"model: {folder} (float32, CPU, {os.cpu_count()} cores); {args.limit} questions of {args.task}; "
        f"lm-eval batch size {args.batch_size}"
    )
    header = (
        f"{'format':7} {'shots':>5} | {'flipscope q/s':>13} {'lm-eval q/s':>11} {'ratio':>6} | "
        f"{'acc fs':>6} {'acc lm':>6} | {'peak MB fs':>10} {'peak MB lm':>10}"
    )
    print(header)
    print("-" * len(header))
    for fmt in args.formats.split(","):
        for shots in (int(s) for s in args.shots.split(",")):
            fs = measure("flipscope", folder, args, fmt, shots)
            lm = measure("lmeval", folder, args, fmt, shots)
            q_fs, q_lm = fs["n"] / fs["seconds"], lm["n"] / lm["seconds"]
            print(
                f"{fmt:7} {shots:>5} | {q_fs:>13.2f} {q_lm:>11.2f} {q_fs / q_lm:>5.1f}x | "
                f"{fs['acc']:>6.3f} {lm['acc']:>6.3f} | {fs['peak_rss_mb']:>10.0f} {lm['peak_rss_mb']:>10.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
