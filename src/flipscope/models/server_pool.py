"""Several OpenAI-compatible servers serving one model: ``openai:http://a:8000/v1|http://b:8000/v1#model``.

Spreading: each member takes up to ``concurrency`` requests at once (the spec's ``concurrency=``, per server); a
request goes to the live member with the fewest in flight, waiting while every member is full. The backend's thread
pool is as wide as all members together.

Failures: a request that still fails after its retries (``openai_http``: timeouts, dropped connections, 429, 5xx)
retires its member for the rest of the run and is sent again to another member; what a retired member had already
answered stands (an answer is whole or not at all, so nothing is counted twice). A refusal (another 4xx) is about the
request, not the server: it is raised. With every member retired the error names each one's last failure.

Agreement (``OpenAIBackend`` checks it before any scoring, ``disagreement``): every member that lists model ids (GET
``/models``) must list the spec's model (or, where none does, the same ids), and every member must answer the load
probe alike (the same capabilities, the same greedy token after the probe prompt at a log-probability within the
probe's tolerance); a pool that mixes models, quantizations or engines is refused, naming the member that differs.
A member that cannot be reached while the backend loads fails the load (it is not retired: nothing ran yet).
A pool's cache identity is its set of URLs: the same servers in any order share passes; another set does not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from flipscope.errors import FlipscopeError
from flipscope.models.openai_http import ClientError, HTTPSettings, get_json, post_json

log = logging.getLogger(__name__)


@dataclass
class Member:
    url: str
    in_flight: int = 0
    failure: str | None = None  # why it was retired; None while it serves


class ServerPool:
    """The members of one ``openai:`` spec, and the rule that spreads requests over them."""

    def __init__(self, urls: Sequence[str], settings: HTTPSettings) -> None:
        self.members = [Member(url) for url in urls]
        self.settings = settings
        self._ready = threading.Condition()

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    @property
    def width(self) -> int:
        """Requests at once over every member."""
        return self.settings.concurrency * len(self.members)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to a live member; on its failure, retire it and send the request to another."""
        while True:
            member = self._take()
            try:
                return post_json(member.url, path, body, self.settings)
            except ClientError:
                raise
            except FlipscopeError as exc:
                self._retire(member, exc)
            finally:
                self._give(member)

    def _take(self) -> Member:
        with self._ready:
            while True:
                live = [m for m in self.members if m.failure is None]
                if not live:
                    reasons = "; ".join(f"{m.url}: {m.failure}" for m in self.members)
                    raise FlipscopeError(
                        f"every server of the pool failed ({reasons})",
                        fix="check the servers and their logs, then rerun: finished passes are cached",
                    )
                free = [m for m in live if m.in_flight < self.settings.concurrency]
                if free:
                    member = min(free, key=lambda m: m.in_flight)
                    member.in_flight += 1
                    return member
                self._ready.wait()

    def _give(self, member: Member) -> None:
        with self._ready:
            member.in_flight -= 1
            self._ready.notify_all()

    def _retire(self, member: Member, exc: FlipscopeError) -> None:
        """Take ``member`` out of the pool (a pool of one: the failure is the request's own error)."""
        if len(self.members) == 1:
            raise exc
        with self._ready:
            if member.failure is None:
                member.failure = exc.problem
                log.warning("server %s retired for this run (%s); its requests go to the others", member.url,
                            member.failure)  # fmt: skip
            self._ready.notify_all()


def pool_identity(urls: Sequence[str]) -> str:
    """What names a pool in cache keys and run.json: its members' URLs, sorted, joined by "|" (the same servers in
    any order are one pool; one server is its URL)."""
    return "|".join(sorted(urls))


def served_models(url: str, settings: HTTPSettings) -> set[str] | None:
    """The model ids a server lists at GET /models; None where it lists none (the check is then skipped)."""
    try:
        listed = get_json(url, "/models", settings).get("data")
    except FlipscopeError as exc:
        log.info("%s/models: %s; its model ids are not compared", url, exc.problem)
        return None
    ids = {m.get("id") for m in listed if isinstance(m, dict)} if isinstance(listed, list) else set()
    return {i for i in ids if isinstance(i, str)} or None


class ProbeAnswer(NamedTuple):
    """How one member answered the load probe: what it can do, and the greedy token after the probe prompt with its
    log-probability."""

    multiple_choice: bool
    rows: str | None
    topk: int
    text: str
    logprob: float | None


def disagreement(
    model: str, served: dict[str, set[str] | None], answers: dict[str, ProbeAnswer], *, tolerance: float
) -> str | None:
    """Why the members do not serve one model (naming the member), or None.

    Model ids (GET /models; members that list none are not compared): where any member lists ``model``, every member
    that lists ids must list it (a gateway may list more); where none does (servers that ignore the name), their
    lists must be equal. Probe answers: the same capabilities and greedy token, its log-probability within
    ``tolerance`` nats of the first member's (different engines or quantizations of one name differ there)."""
    listed = {url: ids for url, ids in served.items() if ids is not None}
    if any(model in ids for ids in listed.values()):
        for url, ids in listed.items():
            if model not in ids:
                return f"{url} does not list {model!r} at /models (it lists {sorted(ids)})"
    elif listed:
        first, ids = next(iter(listed.items()))
        for url, other in listed.items():
            if other != ids:
                return f"{url} lists {sorted(other)} at /models, {first} lists {sorted(ids)}"
    first, ref = next(iter(answers.items()))
    for url, answer in answers.items():
        if answer.logprob is None or ref.logprob is None:
            close = answer.logprob is ref.logprob
        else:
            close = abs(answer.logprob - ref.logprob) <= tolerance
        if answer[:4] != ref[:4] or not close:
            return (
                f"{url} answers the probe otherwise than {first} (greedy token {answer.text!r} at log-prob "
                f"{answer.logprob}, prompt log-probabilities {'usable' if answer.multiple_choice else 'refused'}; "
                f"{first}: {ref.text!r} at {ref.logprob}, {'usable' if ref.multiple_choice else 'refused'})"
            )
    return None
