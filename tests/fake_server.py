"""A local OpenAI-compatible server for tests: scripted faults, then synthetic but consistent answers.

Completions with echo return one token per character run (words and the spaces before them) with log-prob
−0.5 · len(token), and text offsets, like a real server's ``logprobs`` object; chat returns a fixed text.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(prompt: str, *, logprobs: bool = True, echo: bool = True, shift: bool = False,
               generated_at: float = -1.5) -> dict[str, Any]:  # fmt: skip
    if not echo:  # generation only: the one generated token
        generated = {"tokens": [" ok"], "token_logprobs": [generated_at], "text_offset": [len(prompt)],
                     "top_logprobs": [{" ok": generated_at}]}  # fmt: skip
        choice = {"text": " ok", "index": 0, "logprobs": generated, "finish_reason": "length"}
        return {"id": "cmpl", "object": "text_completion", "choices": [choice]}
    tokens = [*re.findall(r"\s*\S+|\s+", prompt), " ok"]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    values: list[float | None] = [None] + [-0.5 * len(t) for t in tokens[1:]]
    if shift:  # the value of the token after: the off-by-one of some servers
        values = [None] + [-0.5 * len(t) - 0.7 for t in tokens[2:]] + [-0.1]
    choice: dict[str, Any] = {"text": prompt + " ok", "index": 0, "finish_reason": "length"}
    if logprobs:
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": values,
            "text_offset": offsets,
            "top_logprobs": [None] + [{t: v, " x": -9.0} for t, v in zip(tokens[1:], values[1:], strict=True)],
        }
    return {"id": "cmpl", "object": "text_completion", "choices": [choice]}


def mutate(payload: Any, path: list[Any], value: Any) -> Any:
    """``payload`` with the element at ``path`` (keys and indices; as far as it exists) replaced by ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(payload, dict) and isinstance(head, str):
        return {**payload, head: mutate(payload.get(head), rest, value)}
    if isinstance(payload, list) and isinstance(head, int) and payload:
        i = head % len(payload)
        return [*payload[:i], mutate(payload[i], rest, value), *payload[i + 1 :]]
    return value


class FakeServer:
    def __init__(
        self,
        script: list[str] | None = None,
        *,
        logprobs: bool = True,
        delay: float = 2.0,
        shift: bool = False,
        max_logprobs: int | None = None,
        models: list[str] | None = None,
        generated_at: float = -1.5,
    ) -> None:
        self.generated_at = generated_at  # the log-prob of the token it generates (echo=false)
        self.script = list(script or [])
        self.models = models if models is not None else ["fake-model"]  # what GET /models lists
        self.max_logprobs = max_logprobs  # asking for more alternatives answers HTTP 400, as OpenAI's API does
        self.logprobs = logprobs
        self.shift = shift
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def next_action(self) -> str:
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/models"):
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                action = server.next_action()
                if server.max_logprobs is not None and int(body.get("logprobs") or 0) > server.max_logprobs:
                    action = "400"
                if action in ("429", "500", "503", "404", "400"):
                    self.send_response(int(action))
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if action == "timeout":
                    time.sleep(server.delay)
                if action == "notext":  # a server that cannot generate: an answer without text
                    payload = {"choices": [{"finish_reason": "stop"}]}
                elif self.path.endswith("/chat/completions"):
                    payload = {"choices": [{"message": {"role": "assistant", "content": "fake answer"}}]}
                else:
                    payload = completion(body["prompt"], logprobs=server.logprobs and action != "nologprobs",
                                         echo=bool(body.get("echo")), shift=server.shift,
                                         generated_at=server.generated_at)  # fmt: skip
                if action.startswith("mutate:"):  # a reply with one field replaced: [path…], value (JSON)
                    path, value = json.loads(action.removeprefix("mutate:"))
                    payload = mutate(payload, path, value)
                data = json.dumps(payload).encode()
                if action.startswith("raw:"):
                    data = action.removeprefix("raw:").encode()
                if action == "truncated":
                    data = data[: len(data) // 2]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):
                    self.wfile.write(data)

        return Handler


@contextmanager
def serve(fake: FakeServer) -> Iterator[str]:
    """Run ``fake`` on a free loopback port; yields its base URL (``http://127.0.0.1:PORT/v1``)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
