"""Given continuations scored teacher-forced, as stored passes: a task's options, or another model's answers (the
baseline's, in ``compare`` for GSM8K and in ``mtbench`` for both turns). The baseline records its answer-token rows
compactly; each candidate is measured against them. ``TeacherScorer`` keys these passes (``key``: the cache-key
rule every such pass follows) and runs them (``score``), reusing a stored pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipscope.display import Display
from flipscope.models import Backend, ModelSpec
from flipscope.plumbing.cache import content_hash
from flipscope.store import PassResult, PassStore, ReferenceRows, Settings
from flipscope.tasks import ItemRequests, TaskData

if TYPE_CHECKING:
    from flipscope.passes.stored import PassRows

log = logging.getLogger(__name__)

#: Bumped whenever scoring changes what a cached pass would contain.
SCORING_VERSION = 6


class TeacherScorer:
    """Scoring passes under ``settings``, stored in ``cache_dir`` (reused unless ``use_cache`` is off); ``notes``:
    what a reader of the run should know (token KL not reported, and why), each once."""

    def __init__(self, settings: Settings, display: Display, cache_dir: Path, *, use_cache: bool) -> None:
        self.settings = settings
        self.display = display
        self.use_cache = use_cache
        self.store = PassStore(cache_dir)
        self.notes: list[str] = []
        #: passes of this run scored elsewhere (``compare --ray``) → the note their scoring called for: found in
        #: the cache, they are reported as scored, not reused, and their note added where scoring here adds it
        self.made_elsewhere: dict[str, str | None] = {}

    def engine(self) -> dict[str, Any]:
        """The settings that change any pass's numbers: device and dtype actually used, batch size."""
        return {"dtype": self.settings.dtype, "device": self.settings.device, "batch": self.settings.batch_size}

    def key(self, weights: str, content: object, ref: PassResult | str | None) -> dict[str, Any]:
        """A scoring pass's key: also the stored top-k and tail samples (baseline), or the baseline it is measured
        against (candidate; ``ref``: its pass, or that pass's key)."""
        ref_key = ref.key if isinstance(ref, PassResult) else ref
        return {
            "v": SCORING_VERSION,
            "model": weights,
            "content": content,
            **self.engine(),
            "store": [self.settings.topk, self.settings.tail_samples] if ref_key is None else None,
            "reference": ref_key,
        }

    def pass_key(self, weights: str, content: object, ref: PassResult | str | None) -> str:
        """The key a scoring pass is stored under: the content hash of ``key``."""
        return content_hash(self.key(weights, content, ref))

    def stored(self, key: str) -> PassResult | None:
        """The pass stored under ``key`` (None where there is none, or the cache is not used)."""
        return self.store.load(key) if self.use_cache else None

    def score(
        self,
        data: TaskData,
        prompts: list[ItemRequests],
        key: str,
        spec: ModelSpec,
        backend: Callable[[], Backend],
        ref: PassResult | None,
        title: str,
    ) -> tuple[PassResult, bool]:
        """A scoring pass (cached) and whether it was stored: the baseline (``ref`` None) records its rows compactly,
        a candidate is measured against ``ref``'s."""
        from flipscope.passes.stored import run_stored_pass

        cached = self.stored(key)
        if cached is not None and key in self.made_elsewhere:
            note = self.made_elsewhere[key]
            if note is not None:
                self.note(note)
            return cached, False
        if cached is not None:
            log.info("%s on %s: reusing cached results %s", spec.label(), data.name, key)
            return cached, True
        reference, exact = self._reference(backend(), ref, spec)
        with self.display.progress(title, sum(len(p.requests) for p in prompts)) as advance:
            result = run_stored_pass(
                self.store,
                backend,
                data,
                prompts,
                key=key,
                rows=pass_rows(self.settings, baseline=ref is None, reference=reference, exact=exact),
                progress=advance,
                use_cache=self.use_cache,
            )
        return result, False

    def _reference(
        self, backend: Backend, ref: PassResult | None, spec: ModelSpec
    ) -> tuple[ReferenceRows | None, bool]:
        reference, exact, note = choose_reference(backend, ref, spec)
        if note is not None:
            self.note(note)
        return reference, exact

    def note(self, message: str) -> None:
        log.warning(message)
        if message not in self.notes:
            self.notes.append(message)


def pass_rows(settings: Settings, *, baseline: bool, reference: ReferenceRows | None, exact: bool) -> PassRows:
    """The rows a pass keeps (the baseline: top-k and tail samples) or is measured against (a candidate)."""
    from flipscope.passes.stored import PassRows

    return PassRows(
        topk=settings.topk if baseline else None,
        tail_samples=settings.tail_samples,
        reference=reference,
        exact=exact,
    )


def choose_reference(
    backend: Backend, ref: PassResult | None, spec: ModelSpec
) -> tuple[ReferenceRows | None, bool, str | None]:
    """The baseline rows to measure this candidate's token KL against, whether it is exact (full rows over one
    vocabulary) or top-k approximate (a side gives only a server's top-k, matched by token text), and the note a
    reader needs where token KL is not reported."""
    if ref is None or ref.reference is None:
        return None, True, None
    rows, kind = backend.info.capabilities.rows, ref.reference.kind
    if rows is None:
        return None, True, f"{spec.label()} gives no per-token log-probabilities, so token KL is not reported for it"
    if rows == "full" and kind == "full" and backend.info.tokenizer_fingerprint == ref.tokenizer:
        return ref.reference, True, None
    if "topk" in (rows, kind) and ref.reference.pieces is not None:
        return ref.reference, False, None
    return (
        None,
        True,
        (
            f"{spec.label()} has a different tokenizer from the baseline's: token KL needs the same vocabulary, "
            "so it is not reported; choice-level metrics (accuracy, flips, choice KL) still are"
        ),
    )
