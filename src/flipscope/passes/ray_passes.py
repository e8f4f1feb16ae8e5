"""Scoring passes placed on a Ray cluster (``--ray``). The driver plans each (model, task) pass as local runs do —
the same keys, the same chunks (``passes.stored``) — and sends only the chunks the pass cache lacks to Ray actors,
one or more per model (``--replicas``), each loading its model once. A candidate's chunk needs only the baseline's
rows of the same items: each baseline chunk that comes back goes into Ray's object store (no shared file system),
and the candidates' chunks of those items are sent with a reference to it. Each chunk that comes back is stored by
the driver, as a local run stores it, so the run that follows finds every pass cached and loads no model. An actor
that dies is restarted by Ray and its unfinished chunks are sent again; a chunk is stored once, by its key."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flipscope.display import Display
from flipscope.models import LoadOptions, ModelSpec
from flipscope.models.base import Decoding, Generation, GenRequest, ModelInfo
from flipscope.passes.ray_cluster import RayPlacement, check_feasible, cluster_error, connected, give_back, start_actor
from flipscope.passes.runner import LazyBackend, TaskWork
from flipscope.passes.stored import Chunk, PassRows, finish_pass, pass_chunks
from flipscope.passes.teacher import TeacherScorer, choose_reference, pass_rows
from flipscope.store import PassResult, Settings
from flipscope.tasks import ItemRequests, TaskData

#: Chunks an actor is sent ahead (one scored while the next travels).
_IN_FLIGHT = 2


@dataclass(frozen=True)
class ModelJob:
    """One model's scoring passes: its spec, how it loads, the scorer whose settings and store its passes use,
    its weights' fingerprint, and the job it is measured against (None: the baseline)."""

    spec: ModelSpec
    options: LoadOptions
    scorer: TeacherScorer
    weights: str
    baseline: ModelJob | None = None


class PassWorker:
    """A Ray actor's body: one model, loaded ahead of its first chunk (a failure is that chunk's error)."""

    def __init__(self, spec: ModelSpec, options: LoadOptions) -> None:
        self.backend = LazyBackend(spec, options)
        self.failed: Exception | None = None

    def pid(self) -> int:
        """Answered once the actor is placed on a node (the driver sends it chunks only then)."""
        return os.getpid()

    def load(self) -> None:
        try:
            self.backend()
        except Exception as err:
            self.failed = err

    def score(
        self, task: TaskData, prompts: list[ItemRequests], chunk: Chunk, settings: Settings, ref: _Rows | None
    ) -> tuple[PassResult, str | None]:
        """``chunk`` of a pass (``task``/``prompts``: its items only), and the note its token KL calls for."""
        if self.failed is not None:
            raise self.failed
        backend = self.backend()
        reference, exact, note = choose_reference(backend, ref.rows if ref else None, self.backend.spec)
        rows = pass_rows(settings, baseline=ref is None, reference=reference, exact=exact)
        first = chunk.first_option - (ref.first_option if ref else 0)
        local = dataclasses.replace(chunk, lo=0, hi=chunk.hi - chunk.lo, first_option=first)
        return local.run(backend, task, prompts, rows, None), note

    # What a backend that runs here does for the driver (``passes.ray_backend.RayBackend``).

    def describe(self) -> tuple[ModelInfo, bool]:
        """The model's info (loading it), and whether it renders chat prompts for teacher-forced scoring."""
        backend = self.backend()
        return backend.info, callable(getattr(backend, "chat_prompt", None))

    def generate(self, requests: list[GenRequest], decoding: Decoding) -> list[Generation]:
        return self.backend().generate(requests, decoding)

    def chat_prompt(self, request: GenRequest) -> str:
        render: Callable[[GenRequest], str] = getattr(self.backend(), "chat_prompt")  # noqa: B009
        return render(request)

    def run_chunk(self, task: TaskData, prompts: list[ItemRequests], chunk: Chunk, rows: PassRows) -> PassResult:
        """``chunk`` of a pass, given its items and prompts only; ``rows.reference``: the whole pass's."""
        return dataclasses.replace(chunk, lo=0, hi=chunk.hi - chunk.lo).run(self.backend(), task, prompts, rows, None)

    def count_tokens(self, text: str) -> int | None:
        return self.backend().count_tokens(text)

    def vocabulary_pieces(self) -> list[str] | None:
        return self.backend().vocabulary_pieces()


@dataclass(frozen=True)
class _Rows:
    """Baseline rows a candidate's chunk is measured against: a baseline pass, or one chunk of it (its (item,
    option) pairs start at ``first_option`` of the whole pass)."""

    rows: PassResult
    first_option: int = 0


@dataclass
class _Pass:
    """A (model, task) pass being filled: its chunks and those stored so far."""

    job: ModelJob
    work: TaskWork
    key: str
    chunks: list[Chunk]
    parts: dict[int, PassResult] = field(default_factory=dict)
    note: str | None = None  # what its token KL calls for, as an actor said


@dataclass(eq=False)
class _Actor:
    handle: Any
    pid: int | None = None  # set once placed on a node
    busy: int = 0  # chunks sent and not back


@dataclass(eq=False)
class _Model:
    """A job's actors and its chunks: ``queue``d for an actor (which takes chunks only once placed, so a replica the
    cluster has no room for holds none), or ``waiting`` for the baseline's rows of their items. A model with nothing
    left to do gives its actors back."""

    job: ModelJob
    actors: list[_Actor] = field(default_factory=list)
    queue: deque[tuple[_Pass, int]] = field(default_factory=deque)
    waiting: int = 0
    tasks_started: int = 0


class _Scheduler:
    """The driver's side: actors by model, chunks in flight, passes stored as their chunks come back."""

    def __init__(self, ray: Any, placement: RayPlacement, jobs: Sequence[ModelJob], tasks: Sequence[TaskWork],
                 advance: Callable[[int], None], *, use_cache: bool) -> None:  # fmt: skip
        self.ray = ray
        self.placement = placement
        self.models = {id(job): _Model(job) for job in jobs}
        self.tasks = tasks
        self.advance = advance
        self.use_cache = use_cache
        self.run_id = uuid.uuid4().hex[:8]
        self.chunks: dict[Any, tuple[_Model, _Actor, _Pass, int]] = {}  # chunk sent → where it goes back
        self.placing: dict[Any, tuple[_Model, _Actor]] = {}  # actor's pid() asked → the actor, not yet placed
        self.sources: dict[tuple[str, int], Any] = {}  # (task, chunk) → the baseline's rows in the object store
        self.waiting: dict[tuple[str, int], list[tuple[_Model, _Pass, int]]] = {}  # candidates' chunks waiting
        self.base_done = 0
        self.eager = False  # every actor started at once (the cluster has room for them all)
        self.later: list[_Model] = []  # eager: the models whose actors start once a baseline actor is placed

    def run(self) -> None:
        """Every job's passes stored. Where the cluster can hold every actor that has work at once, they all start
        (the candidates' once a baseline actor is placed, so that on a cluster shared with other work they never
        take the room the baseline waits for), each loading its model while the baseline's first chunks run, and
        a candidate's chunk is sent as soon as the baseline's rows of its items are stored; elsewhere the
        candidates start once the baseline is done, its actors given back as theirs are asked for."""
        needing = [m for m in self.models.values() if self.has_work(m.job)]
        if needing and check_feasible(self.ray, self.placement) >= len(needing) * self.placement.replicas:
            self.eager = True
            base = [m for m in needing if m.job.baseline is None]
            self.later = [m for m in needing if m.job.baseline is not None] if base else []
            for model in base or needing:
                self.add_actors(model)
        for work in self.tasks:
            for model in self.models.values():
                if model.job.baseline is None or self.eager:
                    self.start(model.job, work)
        while self.chunks or any(m.queue for m in self.models.values()):
            self.wait_one()
        assert not self.waiting, "candidates' chunks left waiting for baseline rows that never came"

    def has_work(self, job: ModelJob) -> bool:
        return not self.use_cache or not all(job.scorer.store.has(self.key(job, w)) for w in self.tasks)

    @staticmethod
    def key(job: ModelJob, work: TaskWork) -> str:
        """The key of ``job``'s pass over ``work``: a local run's."""
        base = job.baseline
        base_key = base.scorer.pass_key(base.weights, work.digest, None) if base is not None else None
        return job.scorer.pass_key(job.weights, work.digest, base_key)

    def start(self, job: ModelJob, work: TaskWork) -> None:
        """Queue the chunks of ``job``'s pass over ``work`` that are not stored (a stored pass: none); a
        candidate's wait for the baseline's rows of their items."""
        model = self.models[id(job)]
        model.tasks_started += 1
        key = self.key(job, work)
        stored = job.scorer.stored(key) if self.use_cache else None
        if stored is not None:
            self.advance(sum(len(p.requests) for p in work.prompts))
            if job.baseline is None:
                self.baseline_done(work, stored)
            return self.dispatch(model)
        run = _Pass(job, work, key, pass_chunks(key, work.prompts))
        for c, chunk in enumerate(run.chunks):
            part = job.scorer.store.load(chunk.key) if self.use_cache else None
            if part is not None:
                run.parts[c] = part
                self.advance(chunk.n_requests)
                if job.baseline is None:
                    self.baseline_done(work, part, c, chunk.first_option)
            elif job.baseline is None or (work.task.name, c) in self.sources:
                model.queue.append((run, c))
            else:
                self.waiting.setdefault((work.task.name, c), []).append((model, run, c))
                model.waiting += 1
        if len(run.parts) == len(run.chunks):
            self.complete(run)
        self.dispatch(model)

    def baseline_done(self, work: TaskWork, result: PassResult, chunk: int | None = None, first: int = 0) -> None:
        """The baseline's rows of its ``chunk`` (None: of the whole pass), whose options start at ``first``,
        stored: into the object store, and the candidates' chunks of those items (the same bounds) sent."""
        name = work.task.name
        indices = [chunk] if chunk is not None else range(len(pass_chunks("", work.prompts)))
        wanted = [c for c in indices if (name, c) not in self.sources]
        if wanted:
            ref = self.ray.put(_Rows(dataclasses.replace(result, scores=[]), first))
            for c in wanted:
                self.sources[name, c] = ref
                for model, run, k in self.waiting.pop((name, c), []):
                    model.waiting -= 1
                    model.queue.append((run, k))
                    self.dispatch(model)
        if chunk is None and not self.eager:
            self.base_done += 1
            if self.base_done == len(self.tasks):  # the candidates start now, on every task
                for other in self.tasks:
                    for model in self.models.values():
                        if model.job.baseline is not None:
                            self.start(model.job, other)

    def dispatch(self, model: _Model) -> None:
        """Send queued chunks to the model's placed actors (two each at most); start its actors if none is."""
        if model.queue and not model.actors and model not in self.later:
            self.add_actors(model)
        for actor in model.actors:
            while model.queue and actor.pid is not None and actor.busy < _IN_FLIGHT:
                run, c = model.queue.popleft()
                self.send(model, actor, run, c)
        if not model.queue and not model.waiting and model.tasks_started == len(self.tasks):
            for actor in [a for a in model.actors if a.busy == 0]:  # nothing more will come: idle actors go
                self.ray.kill(actor.handle, no_restart=True)
                model.actors.remove(actor)
            self.placing = {ref: (m, a) for ref, (m, a) in self.placing.items() if a in m.actors}
            if model.job.baseline is None:
                self.start_later()

    def start_later(self) -> None:
        """Eager: the actors of the models held back until a baseline actor was placed (or the baseline's work was
        done without one), for those that still have work."""
        later, self.later = self.later, []
        for model in later:
            if model.queue or model.waiting or model.tasks_started < len(self.tasks):
                self.add_actors(model)
                self.dispatch(model)

    def add_actors(self, model: _Model) -> None:
        """The model's actors asked of Ray (once: a model whose chunks were ready before it was due gets them then)."""
        if model.actors:
            return
        index = list(self.models).index(id(model.job))
        for r in range(self.placement.replicas):
            name = f"flipscope-{self.run_id}-{index}-{r}"
            actor = _Actor(start_actor(self.ray, PassWorker, self.placement, name, model.job.spec, model.job.options))
            model.actors.append(actor)
            self.placing[actor.handle.pid.remote()] = (model, actor)

    def send(self, model: _Model, actor: _Actor, run: _Pass, c: int) -> None:
        chunk, work = run.chunks[c], run.work
        ref = self.sources[work.task.name, c] if run.job.baseline else None
        items = dataclasses.replace(work.task, items=work.task.items[chunk.lo : chunk.hi])
        call = actor.handle.score.remote(items, work.prompts[chunk.lo : chunk.hi], chunk, run.job.scorer.settings, ref)
        actor.busy += 1
        self.chunks[call] = (model, actor, run, c)

    def complete(self, run: _Pass) -> None:
        """Its chunks merged into the pass, which the run that follows reports as scored here."""
        run.job.scorer.made_elsewhere[run.key] = run.note
        parts = [run.parts[c] for c in range(len(run.chunks))]
        result = finish_pass(run.job.scorer.store, run.key, parts, use_cache=self.use_cache)
        if run.job.baseline is None:
            self.baseline_done(run.work, result)

    def wait_one(self) -> None:
        """Wait for one answer (a chunk scored, or an actor placed) and act on it."""
        [done], _ = self.ray.wait([*self.chunks, *self.placing], num_returns=1)
        if done in self.placing:
            model, actor = self.placing.pop(done)
            actor.pid = self.get(done, model.job)
            actor.handle.load.remote()
            if model.job.baseline is None:
                self.start_later()
            return self.dispatch(model)
        model, actor, run, c = self.chunks.pop(done)
        actor.busy -= 1
        part, note = self.get(done, model.job)
        run.note = run.note or note
        run.parts[c] = run.job.scorer.store.save(part, replace=not self.use_cache)
        self.advance(run.chunks[c].n_requests)
        if run.job.baseline is None:
            self.baseline_done(run.work, run.parts[c], c, run.chunks[c].first_option)
        if len(run.parts) == len(run.chunks):
            self.complete(run)
        self.dispatch(model)

    def get(self, ref: Any, job: ModelJob) -> Any:
        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.RayError, ConnectionError) as err:  # the actor's error, or its death: one line
            raise cluster_error(job.spec, err, self.placement) from None

    def close(self) -> None:
        give_back(self.ray, [actor.handle for model in self.models.values() for actor in model.actors])


def fill_on_ray(
    jobs: Sequence[ModelJob],
    tasks: Sequence[TaskWork],
    placement: RayPlacement,
    display: Display,
    *,
    use_cache: bool,
) -> None:
    """Every job's pass over every task stored in its scorer's store, the missing chunks computed on Ray."""
    if not tasks or not jobs:
        return
    total = len(jobs) * sum(len(p.requests) for work in tasks for p in work.prompts)
    with connected(placement) as ray, display.progress(f"Ray ({placement.address})", total) as advance:
        scheduler = _Scheduler(ray, placement, jobs, tasks, advance, use_cache=use_cache)
        try:
            scheduler.run()
        finally:
            scheduler.close()
