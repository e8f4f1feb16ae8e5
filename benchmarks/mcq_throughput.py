"""Multiple-choice scoring speed: flipscope vs lm-eval 0.4.13, side by side in one run, at the same boundaries.

Both score the same MMLU questions with the same prompts (flipscope's cloze and letter formats, 0-shot and 5-shot),
the same model folder (the bundled SmolLM2-135M, float32, CPU) and the same batch size. lm-eval gets a local JSONL
task whose context is exactly flipscope's prefix + prompt. Every measurement runs in a process of its own.

- **scoring only**: the model loaded and the requests built; flipscope's ``backend.score(requests)`` against
  lm-eval's ``HFLM.loglikelihood(instances)`` over the same (context, option) pairs.
- **whole CLI process**: wall time from process start to exit, same items. A flipscope comparison scores two models
  (baseline and candidate), so it is timed as ``flipscope compare hf:F hf:F' --no-cache`` (F' a hard-linked copy of
  F) against two ``lm_eval --model hf`` processes, one per model.
- **efficiency vs the limit**: the tokens that must be computed (each distinct shared prefix once, then each
  question's own tokens and its options' tokens) per second of flipscope's scoring, over the bare forward-pass
  throughput of the same model on full batches (batch × 256 random tokens, no cache, logits of one position).

    pip install -e ".[bench]"      # lm-eval==0.4.13
    python benchmarks/mcq_throughput.py                       # 48 questions from 4 MMLU subjects
    python benchmarks/mcq_throughput.py --task mmlu --limit 24  # spread over all 57 subjects
    python benchmarks/mcq_throughput.py --task hellaswag --formats cloze --shots 0   # lm-eval's own config
    python benchmarks/mcq_throughput.py --task winogrande --formats cloze --shots 0

For a suite task (ARC, HellaSwag, PIQA, Winogrande, BoolQ, OpenBookQA) the whole-CLI lm-eval process runs
lm-eval's stock config on the same rows (``flipscope.tasks.lm_eval_export``), 0-shot: its few-shot examples would
come from a training split the offline copy lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devices import synchronize  # this folder's: the scripts share it

from flipscope.metrics import first_argmax
from flipscope.tasks import PromptFormat, item_requests, load_task
from flipscope.tasks.lm_eval_export import STOCK, export_task

BARE_LENGTH = 256


def questions(args: argparse.Namespace) -> tuple[list, list, list]:
    """(items, their ItemRequests, every request in order); Winogrande gives a request per option."""
    task = load_task(args.task, fewshot=5, limit=args.limit, seed=args.seed)  # same items for 0- and 5-shot
    prompts = item_requests(task, PromptFormat(args.format), args.shots)
    return task.items, prompts, [r for p in prompts for r in p.requests]


def correct(items, prompts, lls) -> float:  # type: ignore[no-untyped-def]
    """Accuracy from the options' log-likelihoods, listed request by request, continuation by continuation."""
    at, right = 0, 0
    for item, prompt in zip(items, prompts, strict=True):
        n = sum(len(r.continuations) for r in prompt.requests)
        right += first_argmax(tuple(lls[at : at + n])) == item.answer
        at += n
    return right / len(items)


def work_tokens(tokenizer, requests) -> int:  # type: ignore[no-untyped-def]
    """Tokens that must run: each distinct prefix once, then each question's own tokens and its options'."""
    n = lambda text: len(tokenizer.encode(text, add_special_tokens=False)) if text else 0  # noqa: E731
    prefixes = {r.prefix for r in requests}
    return sum(n(p) for p in prefixes) + sum(
        n(r.prefix + r.prompt) - n(r.prefix) + sum(n(c) for c in r.continuations) for r in requests
    )


def fs_score(args: argparse.Namespace) -> dict:
    from flipscope.models import LoadOptions, parse_spec
    from flipscope.models.hf import HFBackend

    items, prompts, requests = questions(args)
    backend = HFBackend.load(
        parse_spec(f"hf:{args.folder}"), args.folder, LoadOptions(args.device, args.dtype, args.batch_size)
    )
    start = time.perf_counter()
    scores = backend.score(requests)
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "n": len(items),
        "acc": correct(items, prompts, [v for s in scores for v in s.logprobs]),
        "tokens": work_tokens(backend.tokenizer, requests),
    }


def lm_score(args: argparse.Namespace) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    items, prompts, requests = questions(args)
    lm = HFLM(pretrained=args.folder, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    pairs = [(r.prefix + r.prompt, c) for r in requests for c in r.continuations]
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    start = time.perf_counter()
    out = lm.loglikelihood(instances)
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "n": len(items), "acc": correct(items, prompts, [ll for ll, _ in out])}


def bare(args: argparse.Namespace) -> dict:
    """Tokens/s of plain forward passes on full batches: the limit of any scorer of this model here."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, BARE_LENGTH), device=args.device)
    with torch.no_grad():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)  # warm-up
        synchronize(args.device)
        start, rounds = time.perf_counter(), 4
        for _ in range(rounds):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        synchronize(args.device)
        elapsed = time.perf_counter() - start
    return {"tokens_per_s": rounds * ids.numel() / elapsed}


def lm_task(folder: Path, args: argparse.Namespace) -> str:
    """The lm-eval task for the whole-CLI timing: a suite task through lm-eval's own stock config (pointed at the
    same rows); MMLU and files as a JSONL task whose context is exactly flipscope's prefix + prompt."""
    items, _, requests = questions(args)
    if args.task in STOCK:
        return export_task(args.task, [item.item_id for item in items], folder)
    with (folder / "data.jsonl").open("w") as fh:
        for item, req in zip(items, requests, strict=True):
            row = {"context": req.prefix + req.prompt, "choices": list(req.continuations), "answer": item.answer}
            fh.write(json.dumps(row) + "\n")
    (folder / "task.yaml").write_text(
        "task: flipscope_bench\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'data.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: choices\ndoc_to_target: answer\ntarget_delimiter: ""\n'
        "num_fewshot: 0\nmetric_list:\n  - metric: acc\n"
    )
    return "flipscope_bench"


#: Runs a command and prints its own peak RSS (the benchmark's other children are not counted).
_PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed:\n{proc.stderr[-3000:]}")
    peak = next(line for line in proc.stderr.splitlines() if line.startswith("PEAK "))
    return elapsed, int(peak.split()[1]) / 1024


def cli_times(args: argparse.Namespace, copy: str, env: dict[str, str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mcq-bench-"))
    fs_cmd = [
        sys.executable,
        "-m",
        "flipscope",
        "compare",
        f"hf:{args.folder}",
        f"hf:{copy}",
        "--tasks",
        args.task,
        "--limit",
        str(args.limit),
        "--fewshot",
        str(args.shots),
        "--format",
        args.format,
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--no-cache",
        "--cache-dir",
        str(work / "cache"),
        "--out",
        str(work / "run"),
    ]
    fs_s, fs_mb = timed(fs_cmd, env)
    lm_name = lm_task(work, args)
    lm_s = 0.0
    for model in (args.folder, copy):
        lm_cmd = [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model},dtype={args.dtype}",
            "--device",
            args.device,
            "--batch_size",
            str(args.batch_size),
            "--tasks",
            lm_name,
            "--include_path",
            str(work),
        ]
        lm_s += timed(lm_cmd, env)[0]
    shutil.rmtree(work, ignore_errors=True)
    return {"fs_s": fs_s, "lm_s": lm_s, "fs_cli_mb": fs_mb}


def measure(worker: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    flags = [
        "--worker",
        worker,
        "--folder",
        args.folder,
        "--task",
        args.task,
        "--limit",
        str(args.limit),
        "--format",
        args.format,
        "--shots",
        str(args.shots),
        "--seed",
        str(args.seed),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]
    proc = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{worker} {args.format} {args.shots}-shot failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        default="mmlu:astronomy,philosophy,prehistory,high_school_psychology",
        help="flipscope task; the default shares each subject's few-shot prefix among ~12 questions",
    )
    parser.add_argument("--limit", type=int, default=48, help="questions per configuration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default="cloze,letter")
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--no-cli", action="store_true", help="skip the whole-process timings")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/cuda_check.py)")
    parser.add_argument("--dtype", default="float32", help="float32, or bfloat16 / float16 on a GPU")
    parser.add_argument("--worker", choices=["fs", "lm", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--format", default="cloze", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.shots = int(args.shots)
        result = {"fs": fs_score, "lm": lm_score, "bare": bare}[args.worker](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    from flipscope.models.bundled import ensure_local

    args.folder = str(ensure_local("smollm2-135m"))
    copy = Path(tempfile.mkdtemp(prefix="mcq-copy-")) / "model"
    shutil.copytree(args.folder, copy, copy_function=os.link)  # the same weights under another name
    weights_mb = sum(p.stat().st_size for p in Path(args.folder).glob("*.safetensors")) / 2**20
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    limit = measure("bare", argparse.Namespace(**{**vars(args), "shots": 0}), env)["tokens_per_s"]
    print(
        f"model: {args.folder} ({args.dtype}, {args.device}, {os.cpu_count()} CPU cores, weights {weights_mb:.0f} MB); "
        f"{args.limit} "
        f"questions of {args.task}; batch size {args.batch_size} for both; bare forward {limit:.0f} tokens/s"
    )
    header = (
        f"{'format':7} {'shots':>5} | scoring only: {'fs q/s':>7} {'lm q/s':>7} {'ratio':>6} | whole CLI "
        f"(2 models): {'fs s':>6} {'lm s':>6} {'ratio':>6} | {'efficiency':>10} | {'acc fs':>6} {'acc lm':>6} | "
        f"peak MB: {'fs score':>8} {'lm score':>8} {'fs CLI':>7}"
    )
    print(header)
    print("-" * len(header))
    for fmt in args.formats.split(","):
        for shots in (int(s) for s in str(args.shots).split(",")):
            run = argparse.Namespace(**{**vars(args), "format": fmt, "shots": shots})
            fs, lm = measure("fs", run, env), measure("lm", run, env)
            cli = cli_times(run, str(copy), env) if not args.no_cli else {"fs_s": 0, "lm_s": 0, "fs_cli_mb": 0}
            q_fs, q_lm = fs["n"] / fs["seconds"], lm["n"] / lm["seconds"]
            eff = fs["tokens"] / fs["seconds"] / limit
            whole = f"{cli['fs_s']:>6.1f} {cli['lm_s']:>6.1f} {cli['lm_s'] / max(cli['fs_s'], 1e-9):>5.1f}x"
            print(
                f"{fmt:7} {shots:>5} | {'':>14}{q_fs:>7.2f} {q_lm:>7.2f} {q_fs / q_lm:>5.1f}x | {'':>19}{whole} | "
                f"{eff:>10.0%} | {fs['acc']:>6.3f} {lm['acc']:>6.3f} | {'':>9}{fs['peak_rss_mb']:>8.0f} "
                f"{lm['peak_rss_mb']:>8.0f} {cli['fs_cli_mb']:>7.0f}",
                flush=True,
            )
    shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
