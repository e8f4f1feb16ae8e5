"""A llama-cpp-python OpenAI-compatible server (its ``[server]`` extra) on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@contextlib.contextmanager
def serve_gguf(path: Path, alias: str, n_ctx: int = 2048, *, procs: list[Any] | None = None) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port serving ``path``; yields its /v1 URL (its process is
    appended to ``procs``, for a test that kills it)."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", alias,
               "--host", "127.0.0.1", "--port", str(port), "--logits_all", "true", "--n_ctx", str(n_ctx),
               "--seed", "0", "--verbose", "false"]  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's lifetime; a pipe would fill and stall it
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    if procs is not None:
        procs.append(proc)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"llama_cpp.server did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
