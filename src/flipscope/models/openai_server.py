"""``openai:<base_url>#<model>``: any OpenAI-compatible server (vLLM, llama.cpp's servers, SGLang, TGI, hosted APIs).

Multiple choice needs prompt log-probabilities: each option is sent as ``/completions`` with ``echo`` and
``logprobs``, and the log-probs of the tokens that start at or after the option's first character are summed;
the server's top-k alternatives at those tokens (k = 20, or 5 where a server allows no more) give top-k
approximate token KL (``metrics.topk_kl``). Many servers return no prompt log-probabilities for ``echo``
(llama.cpp's C++ server among them); scoring through them silently gives chance-level answers in other tools.
flipscope probes the server once when it loads and refuses multiple choice there with an explanation. Generation
goes through ``/chat/completions``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError
from flipscope.models.base import (
    Capabilities,
    Decoding,
    Generation,
    GenRequest,
    ModelInfo,
    OptionScores,
    RowSink,
    TopKRows,
    finish_reason,
    seed_of,
)
from flipscope.models.openai_http import ClientError, HTTPSettings, post_json
from flipscope.models.server_pool import ProbeAnswer, ServerPool, disagreement, pool_identity, served_models

if TYPE_CHECKING:
    from flipscope.models.options import LoadOptions
    from flipscope.models.spec import ModelSpec
    from flipscope.tasks import ScoreRequest

log = logging.getLogger(__name__)

PROBE_TEXT = "Paris is the capital of France, and Rome is the capital of Italy."
PROBE_PREFIX = "The capital of France is"
#: How far (nats) a server's echoed log-prob may differ from the one it generated the same token with.
PROBE_TOLERANCE = 0.05
#: Alternatives asked for per token: 20 (vLLM's default cap), else 5 (OpenAI's cap for completions).
TOP_LOGPROBS = (20, 5)
NO_MC_FIX = (
    "serve the model where prompt log-probabilities are right (vLLM's server), or score it locally with a gguf:, "
    "hf: or vllm: spec"
)
NO_PROMPT_LOGPROBS = (
    "returns no prompt log-probabilities for echo=true, so multiple-choice options cannot be scored (a tool that "
    "scored them anyway would report chance-level accuracy)"
)


def generation_of(response: dict[str, Any], *, chat: bool, where: str) -> Generation:
    """A generation reply (``choices[0].text``, or ``.message.content`` for chat; ``usage`` token counts) as a
    Generation; anything else (no text, text that is not a string, counts that are not whole numbers) is an error
    naming the server — never an answer made up from it."""
    try:
        choice = response["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage = response.get("usage") or {}
        counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
        if text is None:
            text = ""
        if not isinstance(text, str) or not all(c is None or (isinstance(c, int) and c >= 0) for c in counts):
            raise TypeError("not a text answer")
        return Generation(text, finish_reason(choice.get("finish_reason")), counts[0], counts[1])
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise FlipscopeError(
            f"{where} returned an answer without generated text ({type(exc).__name__}: {str(exc)[:80]})",
            fix="check that the server can generate (its /v1/completions and /v1/chat/completions)",
        ) from exc


def parse_location(location: str) -> tuple[str, str]:
    """(base URL, model name) of ``<base_url>[|<base_url>...]#<model>[,option=value...]``; a pool's "URL" is its
    members' URLs, sorted, joined by "|" (what identifies it, whatever order they were given in)."""
    urls, model, _ = parse_server(location)
    return pool_identity(urls), model


def parse_server(location: str) -> tuple[list[str], str, HTTPSettings]:
    """``<base_url>[|<base_url>...]#<model>[,concurrency=N][,timeout=SECONDS][,retries=N]`` → (the URLs, model,
    HTTP settings; ``concurrency`` is per server)."""
    url, sep, rest = location.partition("#")
    model, *options = rest.split(",")
    urls = [u.strip().rstrip("/") for u in url.split("|")]
    if not sep or not model or not all(u.startswith(("http://", "https://")) for u in urls):
        raise FlipscopeError(
            f"cannot read server spec {location!r}",
            fix="write openai:<base_url>#<model>, e.g. openai:http://127.0.0.1:8000/v1#my-model, or several servers "
            "of one model as openai:http://a:8000/v1|http://b:8000/v1#my-model",
        )
    if len(set(urls)) != len(urls):
        raise FlipscopeError(f"server spec {location!r} names a server twice", fix="give each server once")
    values: dict[str, float] = {}
    for option in options:
        key, _, value = option.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in ("concurrency", "timeout", "retries") or number < (1 if key == "concurrency" else 0):
            raise FlipscopeError(
                f"cannot read server option {option!r} in {location!r}",
                fix="options are concurrency=<requests at once ≥ 1>, timeout=<seconds>, retries=<count>, e.g. "
                "openai:http://127.0.0.1:8000/v1#my-model,concurrency=8,timeout=120",
            )
        values[key] = number
    defaults = HTTPSettings()
    settings = HTTPSettings(
        timeout=values.get("timeout", defaults.timeout),
        retries=int(values.get("retries", defaults.retries)),
        backoff=defaults.backoff,
        concurrency=int(values.get("concurrency", defaults.concurrency)),
    )
    return urls, model, settings


#: How far above 0 a server's log-probability may be (rounding) before the reply counts as malformed.
LOGPROB_SLACK = 1e-3


def echo_logprobs(choice: dict[str, Any]) -> tuple[list[str], list[float | None], list[int]] | None:
    """(tokens, token_logprobs, text_offset) of a completions choice, or None where the server gave none."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    tokens, values, offsets = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
    if not isinstance(tokens, list) or not isinstance(values, list) or not isinstance(offsets, list):
        return None
    if not tokens or len(tokens) != len(values) or len(tokens) != len(offsets):
        return None
    if not all(isinstance(t, str) for t in tokens) or not all(_is_int(o) for o in offsets):
        return None
    if not all(v is None or _is_logprob(v) for v in values):
        return None
    return tokens, values, offsets


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_logprob(value: Any) -> bool:
    """A log-probability as a server may write it: a number ≤ 0 (a little rounding above allowed), or NaN, which
    is then reported per item and left out of every metric. Anything else makes the reply malformed."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isnan(value) or value <= LOGPROB_SLACK


def continuation_logprob(choice: dict[str, Any], context_chars: int, total_chars: int) -> tuple[float, int] | None:
    """Sum of the log-probs of tokens starting in [context_chars, total_chars), and how many; None if missing."""
    parsed = echo_logprobs(choice)
    if parsed is None:
        return None
    _, values, offsets = parsed
    chosen = [v for v, o in zip(values, offsets, strict=True) if context_chars <= o < total_chars]
    if not chosen or any(v is None for v in chosen):
        return None
    return float(sum(v for v in chosen if v is not None)), len(chosen)


def continuation_topk(choice: dict[str, Any], context_chars: int, total_chars: int) -> TopKRows | None:
    """The server's top-k (token text → log-prob) at each token starting in [context_chars, total_chars)."""
    parsed = echo_logprobs(choice)
    top = (choice.get("logprobs") or {}).get("top_logprobs")
    if parsed is None or not isinstance(top, list) or len(top) != len(parsed[2]):
        return None
    chosen = [t for t, o in zip(top, parsed[2], strict=True) if context_chars <= o < total_chars]
    if not chosen or not all(isinstance(t, dict) and t for t in chosen):
        return None
    if not all(v is None or _is_logprob(v) for t in chosen for v in t.values()):
        return None
    return TopKRows(tuple({str(k): float(v) for k, v in t.items() if v is not None} for t in chosen))


class OpenAIBackend:
    """One server, or a pool of servers of one model (``server_pool``): probed on load, then spread over."""

    def __init__(self, base_url: str | Sequence[str], model: str, settings: HTTPSettings, label: str) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.pool = ServerPool(urls, settings)
        self._probe_answers: dict[str, tuple[str, float | None]] = {}
        self.base_url, self.model, self.settings = pool_identity(urls), model, settings
        capabilities = self._agreed(label)
        identity = hashlib.sha256(f"{self.base_url}#{model}".encode()).hexdigest()[:20]
        self.info = ModelInfo(
            label=label,
            vocab_size=0,
            tokenizer_fingerprint=f"server:{identity}",
            details={
                "server": self.base_url,
                "model": model,
                "prompt_logprobs": capabilities.multiple_choice,
                "top_logprobs": capabilities.topk,
            },
            capabilities=capabilities,
        )

    @classmethod
    def load(cls, spec: ModelSpec, options: LoadOptions) -> OpenAIBackend:
        if spec.compression:
            raise FlipscopeError(
                f"{spec.label()}: a model behind a server cannot be compressed by flipscope",
                fix="compress the model before serving it, or give a local spec",
            )
        urls, model, settings = parse_server(spec.location)
        return cls(urls, model, settings, spec.label())

    def _agreed(self, label: str) -> Capabilities:
        """Probe every member; a pool whose members serve other models or answer the probe otherwise is refused."""
        urls = self.pool.urls
        if len(urls) == 1:
            return self.probe()
        served = {url: served_models(url, self.settings) for url in urls}
        probed = {url: self.probe(url) for url in urls}
        answers = {
            url: ProbeAnswer(c.multiple_choice, c.rows, c.topk, *self._probe_answers.get(url, ("", None)))
            for url, c in probed.items()
        }  # what each found, without the note (which names the server)
        odd = disagreement(self.model, served, answers, tolerance=PROBE_TOLERANCE)
        if odd is not None:
            raise FlipscopeError(
                f"{label}: the servers of this pool do not serve one model: {odd}",
                fix="list only servers of the same model and engine in one openai: spec",
            )
        return probed[urls[0]]

    def _completion(
        self, prompt: str, *, logprobs: int = 1, echo: bool = True, url: str | None = None
    ) -> dict[str, Any]:
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": echo,
            "logprobs": logprobs,
        }
        response = post_json(url, "/completions", body, self.settings) if url else self.pool.post("/completions", body)
        choices = response.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise FlipscopeError(f"server {url or self.base_url} returned no choices", fix="check the server's logs")
        first: dict[str, Any] = choices[0]
        return first

    def probe(self, url: str | None = None) -> Capabilities:
        """Does the server (``url``: this member of a pool; None: the only one) return prompt log-probabilities,
        and are they the right ones? The token it generates after PROBE_PREFIX, echoed back as the prompt's last
        token, must get the log-prob it was generated with. What it generated is kept (``_probe_answers``)."""
        url = url or self.pool.urls[0]
        for asked in TOP_LOGPROBS:
            try:
                choice = self._completion(PROBE_TEXT, logprobs=asked, url=url)
                break
            except ClientError as exc:
                if exc.status != 400 or asked == TOP_LOGPROBS[-1]:
                    raise
                log.info("%s refused logprobs=%d (%s); asking for %d", url, asked, exc.problem, TOP_LOGPROBS[-1])
        if continuation_logprob(choice, 1, len(PROBE_TEXT)) is None:
            return self._refused(f"server {url} {NO_PROMPT_LOGPROBS}")
        top = choice["logprobs"].get("top_logprobs")  # a dict: continuation_logprob found its log-probs
        widths = [min(len(t), asked) for t in top if isinstance(t, dict)] if isinstance(top, list) else []
        generated = self._completion(PROBE_PREFIX, echo=False, url=url)
        text = generated.get("text")
        text = text if isinstance(text, str) else ""
        lp = generated.get("logprobs")
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        values = values if isinstance(values, list) else []
        if values and values[0] is not None and not _is_logprob(values[0]):
            raise FlipscopeError(
                f"server {url} returned a malformed reply: token_logprobs[0] = {values[0]!r} is not a log-probability",
                fix="check the server and its logs",
            )
        self._probe_answers[url] = (text, float(values[0]) if values and values[0] is not None else None)
        if text and values and values[0] is not None:
            echoed = continuation_logprob(
                self._completion(PROBE_PREFIX + text, url=url), len(PROBE_PREFIX), len(PROBE_PREFIX + text)
            )
            if echoed is None or echoed[1] != 1 or abs(echoed[0] - float(values[0])) > PROBE_TOLERANCE:
                got = "none" if echoed is None else f"{echoed[0]:.3f}"
                return self._refused(
                    f"server {url} returns prompt log-probabilities that disagree with its own generation "
                    f"({text!r} after the probe prompt: generated at {float(values[0]):.3f}, echoed at {got}; "
                    "llama-cpp-python 0.3.36's server reads each prompt token's log-prob one position late), so "
                    "multiple-choice scores from it would be wrong",
                )
        k = max(widths) if widths else 0
        return Capabilities(rows="topk" if k else None, topk=k, chat=True, max_context=None, fix=NO_MC_FIX)

    @staticmethod
    def _refused(note: str) -> Capabilities:
        """A server whose prompt log-probabilities cannot be used: no option scores, no token rows; chat works."""
        return Capabilities(multiple_choice=False, rows=None, chat=True, max_context=None, note=note, fix=NO_MC_FIX)

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        caps = self.info.capabilities
        if not caps.multiple_choice:
            raise FlipscopeError(f"{self.info.label}: {caps.note}", fix=caps.fix)
        k = caps.topk if rows is not None else 0

        def one(request: ScoreRequest) -> tuple[OptionScores, list[TopKRows | None]]:
            context = request.prefix + request.prompt
            sums, counts, tops = [], [], []
            for option in request.continuations:
                text = context + option
                choice = self._completion(text, logprobs=max(k, 1))
                result = continuation_logprob(choice, len(context), len(text))
                if result is None:
                    raise FlipscopeError(
                        f"{self.info.label}: the answer for option {option!r} carried no prompt log-probabilities",
                        fix="the server stopped returning them mid-run; check its logs and rerun (finished "
                        "passes are cached)",
                    )
                sums.append(result[0])
                counts.append(result[1])
                tops.append(continuation_topk(choice, len(context), len(text)) if k else None)
            return OptionScores(tuple(sums), tuple(counts)), tops

        out: list[OptionScores] = []
        with ThreadPoolExecutor(max_workers=self.pool.width) as pool:
            for index, (scored, tops) in enumerate(pool.map(one, requests)):
                out.append(scored)
                for option, top in enumerate(tops):
                    if rows is not None and top is not None:
                        rows(index, option, top)  # missing top-k: that item gets no token KL, and a warning
                if advance:
                    advance(1)
        return out

    def vocabulary_pieces(self) -> None:
        return None

    def count_tokens(self, text: str) -> None:
        return None

    def generate(
        self,
        requests: Sequence[GenRequest],
        decoding: Decoding,
        *,
        advance: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """``/completions`` for raw prompts, ``/chat/completions`` for chat, concurrently, retried."""
        settings = {
            "model": self.model,
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature,
            **({"stop": list(decoding.stop)} if decoding.stop else {}),
        }

        def one(index: int) -> Generation:
            request = requests[index]
            seeded = {**settings, "seed": seed_of(request, decoding, index)}  # threads: each request its own dict
            if request.chat:
                path, body = "/chat/completions", {**seeded, "messages": request.messages()}
            else:
                path, body = "/completions", {**seeded, "prompt": request.prompt}
            return generation_of(
                self.pool.post(path, body),
                chat=request.chat,
                where=f"server {self.base_url} ({path})",
            )

        out = []
        with ThreadPoolExecutor(max_workers=self.pool.width) as pool:
            for generation in pool.map(one, range(len(requests))):
                out.append(generation)
                if advance:
                    advance(1)
        return out

    def close(self) -> None:
        pass
