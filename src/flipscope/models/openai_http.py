"""A small JSON-over-HTTP client for OpenAI-compatible servers: retries with backoff, timeouts, no secrets in logs.

Retried: HTTP 429 and 5xx, timeouts, dropped connections and bodies that are not complete JSON. Not retried: other
4xx (a wrong model name or URL will not fix itself). The API key is read from an environment variable at call
time and only ever sent in the Authorization header.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from flipscope.errors import FlipscopeError

log = logging.getLogger(__name__)

#: Environment variables the API key is read from, in order.
API_KEY_VARIABLES = ("FLIPSCOPE_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class HTTPSettings:
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 0.5  # seconds; doubles per retry
    concurrency: int = 4


class Transient(Exception):
    """A failure worth retrying; its message says what happened."""


class ClientError(FlipscopeError):
    """The server refused the request (a 4xx other than 429); ``status`` is the HTTP code."""

    def __init__(self, message: str, *, status: int, fix: str) -> None:
        super().__init__(message, fix=fix)
        self.status = status


def _api_key() -> str | None:
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


def post_json(base_url: str, path: str, body: dict[str, Any], settings: HTTPSettings) -> dict[str, Any]:
    """POST ``body`` to ``base_url + path``; the parsed JSON object, or a FlipscopeError after the retries."""
    return _with_retries(base_url.rstrip("/") + path, body, settings)


def get_json(base_url: str, path: str, settings: HTTPSettings) -> dict[str, Any]:
    """GET ``base_url + path`` (e.g. ``/models``); the parsed JSON object, or a FlipscopeError after the retries."""
    return _with_retries(base_url.rstrip("/") + path, None, settings)


def _with_retries(url: str, body: dict[str, Any] | None, settings: HTTPSettings) -> dict[str, Any]:
    last = ""
    for attempt in range(settings.retries + 1):
        if attempt:
            delay = settings.backoff * 2 ** (attempt - 1)
            log.info("retrying %s in %.1f s after: %s", url, delay, last)
            time.sleep(delay)
        try:
            return _send_once(url, body, settings.timeout)
        except Transient as exc:
            last = str(exc)
    raise FlipscopeError(
        f"server {url} failed {settings.retries + 1} times; last: {last}",
        fix="check that the server is up and not overloaded; raise its timeout or retries in the spec "
        "(openai:<url>#<model>,timeout=120,retries=8) or lower concurrency=",
    )


def _send_once(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """One POST of ``body`` (None: one GET)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    key = _api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read()[:300].decode(errors="replace")
        except (OSError, http.client.HTTPException):
            detail = "(its body could not be read)"
        if exc.code == 429 or exc.code >= 500:
            raise Transient(f"HTTP {exc.code}") from exc
        raise ClientError(
            f"server {url} answered HTTP {exc.code}: {detail.strip()}",
            status=exc.code,
            fix="check the base URL, the model name after '#', and the API key variable",
        ) from exc
    except TimeoutError as exc:
        raise Transient(f"no answer within {timeout:g} s") from exc
    except http.client.HTTPException as exc:  # a reply cut off or garbled (a server killed mid-answer)
        raise Transient(f"broken reply: {type(exc).__name__}") from exc
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise Transient(f"no answer within {timeout:g} s") from exc
        raise Transient(f"connection failed: {reason}") from exc
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise Transient(f"the response is not complete JSON ({len(raw)} bytes)") from exc
    if not isinstance(parsed, dict):
        raise Transient("the response is not a JSON object")
    return parsed
