"""Generation speed: flipscope's transformers backend vs lm-eval 0.4.13's ``generate_until``, side by side, same
boundaries (model loaded, prompts built; the timed part is generating), each in a process of its own.

Both get the same GSM8K prompts (lm-eval's gsm8k_cot 8-shot context), the same stop strings ("Q:", "</s>",
"<|im_end|>"), the same max new tokens and the same batch size, greedy, on the bundled SmolLM2-135M (float32, CPU).
Throughput is generated tokens (counted with the model's tokenizer on each tool's returned text, so both are
counted alike) per second. The limit is the bare decode step: a batch of one-token forward passes over a key/value
cache as long as the prompts, no sampling, no stopping logic.

    pip install -e ".[dev]"     # lm-eval==0.4.13
    python benchmarks/gen_throughput.py --prompts 32 --max-new-tokens 128 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from devices import synchronize  # this folder's: the scripts share it


def prompts(n: int, seed: int) -> list[str]:
    from flipscope.passes.generation import load_free_task

    return load_free_task("gsm8k", limit=n, seed=seed).prompts


def count(tokenizer, texts: list[str]) -> int:  # type: ignore[no-untyped-def]
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def fs(args: argparse.Namespace) -> dict:
    from flipscope.models import LoadOptions, load_backend, parse_spec
    from flipscope.models.base import Decoding, GenRequest
    from flipscope.tasks.gsm8k import STOP

    texts = prompts(args.prompts, args.seed)
    backend = load_backend(parse_spec(f"hf:{args.folder}"), LoadOptions(args.device, args.dtype, args.batch_size))
    decoding = Decoding(max_new_tokens=args.max_new_tokens, stop=STOP)
    start = time.perf_counter()
    made = backend.generate([GenRequest(t) for t in texts], decoding)
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    outputs = [g.text for g in made]
    return {"seconds": elapsed, "tokens": count(backend.tokenizer, outputs), "outputs": outputs}  # type: ignore[attr-defined]


def lm(args: argparse.Namespace) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from flipscope.tasks.gsm8k import STOP

    texts = prompts(args.prompts, args.seed)
    model = HFLM(pretrained=args.folder, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    gen = {"until": list(STOP), "max_gen_toks": args.max_new_tokens, "do_sample": False}
    instances = [Instance("generate_until", {}, (t, gen), i) for i, t in enumerate(texts)]
    start = time.perf_counter()
    outputs = model.generate_until(instances)
    synchronize(args.device)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "tokens": count(model.tokenizer, outputs), "outputs": outputs}


def bare(args: argparse.Namespace) -> dict:
    """Decode steps at the batch size over a cache as long as the average prompt: the limit of any generator."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    texts = prompts(args.prompts, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    length = sum(len(tokenizer.encode(t)) for t in texts) // len(texts)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, length), device=args.device)
    steps = min(args.max_new_tokens, 64)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(args.device)
        elapsed = time.perf_counter() - start
    return {"tokens_per_s": steps * args.batch_size / elapsed, "cache_length": length}


def run(worker: str, args: argparse.Namespace) -> dict:
    flags = ["--worker", worker, "--folder", args.folder, "--prompts", str(args.prompts), "--seed", str(args.seed),
             "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
             "--device", args.device, "--dtype", args.dtype]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{worker} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/cuda_check.py)")
    parser.add_argument("--dtype", default="float32", help="float32, or bfloat16 / float16 on a GPU")
    parser.add_argument("--worker", choices=["fs", "lm", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = {"fs": fs, "lm": lm, "bare": bare}[args.worker](args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    from flipscope.models.bundled import ensure_local

    args.folder = str(ensure_local("smollm2-135m"))
    limit = run("bare", args)
    ours, theirs = run("fs", args), run("lm", args)
    same = sum(a.strip() == b.strip() for a, b in zip(ours["outputs"], theirs["outputs"], strict=True))
    print(
        f"{args.prompts} GSM8K prompts (8-shot, ~{limit['cache_length']} tokens), max {args.max_new_tokens} new "
        f"tokens, batch {args.batch_size}, greedy, {args.device} {args.dtype} ({os.cpu_count()} CPU cores); identical "
        "outputs "
        f"{same}/{args.prompts}"
    )
    print(f"{'':28} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'of bare':>8} {'peak MB':>8}")
    for name, r in (("flipscope (transformers)", ours), ("lm-eval generate_until", theirs)):
        rate = r["tokens"] / r["seconds"]
        print(f"{name:28} {r['seconds']:>8.1f} {r['tokens']:>7} {rate:>9.1f} {rate / limit['tokens_per_s']:>8.0%} "
              f"{r['peak_rss_mb']:>8.0f}")  # fmt: skip
    print(f"{'bare decode step (limit)':28} {'':>8} {'':>7} {limit['tokens_per_s']:>9.1f} {'100%':>8} "
          f"{limit['peak_rss_mb']:>8.0f}")  # fmt: skip
    print(f"flipscope / lm-eval: {ours['tokens'] / ours['seconds'] / (theirs['tokens'] / theirs['seconds']):.2f}x")


if __name__ == "__main__":
    main()
