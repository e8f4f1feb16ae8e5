"""Issue 27's pool of servers, measured side by side in one run: the same multiple-choice requests scored by the model
in-process (llama.cpp, the limit: no HTTP), by one llama-cpp-python server, by a pool of two, and by a pool of two
whose second server is killed (SIGKILL) after it answered ``--kill-after`` options.

    python benchmarks/server_pool.py [--items 40] [--task arc_easy] [--kill-after 20]

Same boundaries for every row: ``backend.score(requests)`` on one list of requests (loading and the probe excluded),
after one warm-up request. The pools' scores are compared with one server's (they should be the same numbers) and
every server's with the in-process engine's (llama.cpp batches differently there: differences of ~1e-2 nats). The
file is the bundled SmolLM2-135M dequantized to float32 with BOS on (llama-cpp-python's server aligns echoed
log-probabilities right for such models). Each server runs llama.cpp on its own threads; on a 2-core machine two
servers share the cores with each other and with this process, so the pool's speed-up there says little about a pool
of GPU servers: the row to read is the failure's — the same scores, and what the retry and the retirement cost.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' server launcher (llama_server)

import flipscope.models.server_pool as server_pool
from flipscope.models import load_backend, parse_spec
from flipscope.models.gguf_file import bundled_gguf, dequantized_copy
from flipscope.tasks import PromptFormat, build_requests, load_task
from llama_server import serve_gguf


def timed_scores(spec: str, requests: list[Any]) -> tuple[list[Any], float]:
    backend = load_backend(parse_spec(spec))
    backend.score(requests[:1])  # warm-up: connections, the engine's first allocation
    start = time.perf_counter()
    scores = backend.score(requests)
    seconds = time.perf_counter() - start
    backend.close()
    return scores, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--task", default="arc_easy")
    parser.add_argument("--kill-after", type=int, default=20, help="options the second server answers before SIGKILL")
    args = parser.parse_args()
    task = load_task(args.task, fewshot=0, limit=args.items)
    requests = build_requests(task, PromptFormat.CLOZE, 0)
    options = sum(len(r.continuations) for r in requests)
    folder = Path(tempfile.mkdtemp())
    gguf = folder / "smollm2-135m-bos.gguf"
    dequantized_copy(bundled_gguf("smollm2-135m"), gguf, metadata={"tokenizer.ggml.add_bos_token": True})
    rows: list[tuple[str, float, str, str]] = []
    local, seconds = timed_scores(f"gguf:{gguf}", requests)
    rows.append(("in-process llama.cpp (gguf:, the limit)", seconds, "—", "—"))
    procs: list[Any] = []
    with serve_gguf(gguf, "m") as first, serve_gguf(gguf, "m", procs=procs) as second:
        one, seconds = timed_scores(f"openai:{first}#m", requests)
        rows.append(("one server", seconds, "—", largest(one, local)))
        two, seconds = timed_scores(f"openai:{first}|{second}#m", requests)
        rows.append(("pool of two", seconds, largest(two, one), largest(two, local)))
        real, answered = server_pool.post_json, [0]

        def killing(url: str, path: str, body: dict[str, Any], settings: Any) -> dict[str, Any]:
            if url == second and answered[0] >= args.kill_after and procs[0].poll() is None:
                os.kill(procs[0].pid, signal.SIGKILL)
                procs[0].wait()
            reply = real(url, path, body, settings)
            answered[0] += url == second
            return reply

        server_pool.post_json = killing  # type: ignore[assignment]
        broken, seconds = timed_scores(f"openai:{first}|{second}#m,retries=1", requests)
        server_pool.post_json = real
        killed = f"pool of two, the second killed after {answered[0]} answers"
        rows.append((killed, seconds, largest(broken, one), largest(broken, local)))
    command = f"python benchmarks/server_pool.py --items {args.items} --task {args.task} --kill-after {args.kill_after}"
    print(f"\n`{command}` ({len(requests)} items, {options} options, one request per option; {os.cpu_count()} cores)\n")
    print("| scored by | wall time | options / s | largest difference from one server | from in-process |")
    print("|---|---|---|---|---|")
    for name, seconds, to_one, to_local in rows:
        print(f"| {name} | {seconds:.1f} s | {options / seconds:.1f} | {to_one} | {to_local} |")


def largest(scores: list[Any], reference: list[Any]) -> str:
    """The largest difference of an option's log-likelihood from ``reference``'s (nats; 0: the same numbers)."""
    diffs = [
        abs(a - b) for s, r in zip(scores, reference, strict=True) for a, b in zip(s.logprobs, r.logprobs, strict=True)
    ]
    return f"{max(diffs):.1e}" if max(diffs) else "0 (identical)"


if __name__ == "__main__":
    main()
