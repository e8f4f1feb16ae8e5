"""Scoring passes placed on a Ray cluster (``--ray``). The driver plans each (model, task) pass as local runs do —
the same keys, the same chunks (``passes.stored``) — and sends only the chunks the pass cache lacks to Ray actors,
one or more per model (``--replicas``), each loading its model once. The baseline's chunks go first; once a task's
baseline pass is complete, its compact rows go into Ray's object store and every candidate's chunks of that task
are sent with a reference to them (no shared filesystem). Each chunk that comes back is stored by the driver, as a
local run stores it, so the run that follows finds every pass cached and loads no model. An actor that dies is
restarted by Ray and its unfinished chunks are sent again; a chunk is stored once, by its key."""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flipscope.display import Display
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions, ModelSpec
from flipscope.passes.runner import LazyBackend, TaskWork
from flipscope.passes.stored import Chunk, PassRows, finish_pass, pass_chunks
from flipscope.passes.teacher import TeacherScorer, choose_reference
from flipscope.store import PassResult
from flipscope.tasks import ItemRequests, TaskData

log = logging.getLogger(__name__)

#: Resources an actor asks for by keyword; any other name is a custom resource (``--ray-resources``).
_KEYWORDS = {"num_cpus", "num_gpus", "memory"}
#: What those keywords are called in a node's resources.
_NODE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
#: Environment passed to the actors: where flipscope and the hub keep models.
_ENV_PREFIXES = ("FLIPSCOPE_", "HF_")
#: Chunks an actor is sent ahead (one scored while the next travels).
_IN_FLIGHT = 2


@dataclass(frozen=True, kw_only=True)
class RayPlacement:
    """Where and how passes run on Ray: ``address`` ('local' starts a cluster in this process; 'auto', a
    ``ray://`` address or host:port joins one), what each actor needs, and actors per model."""

    address: str = "local"
    resources: Mapping[str, float] = field(default_factory=lambda: {"num_cpus": 1.0})
    replicas: int = 1
    max_restarts: int = 3  # a dead actor is restarted this many times, its unfinished chunks sent again

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise FlipscopeError(f"--replicas must be at least 1, got {self.replicas}")
        if not self.address.strip():
            raise FlipscopeError("--ray needs an address", fix="use local, auto, ray://HOST:10001 or HOST:6379")

    @staticmethod
    def parse_resources(text: str) -> dict[str, float]:
        """``num_gpus=1,num_cpus=4,memory=8e9,A100=1`` → what each actor asks Ray for."""
        wanted: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            try:
                amount = float(value)
            except ValueError:
                amount = -1.0
            if not eq or not name.strip() or amount < 0:
                raise FlipscopeError(
                    f"--ray-resources: cannot read {part!r}", fix="give NAME=AMOUNT pairs, e.g. num_gpus=1,num_cpus=4"
                )
            wanted[name.strip()] = amount
        return wanted

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {k: v for k, v in self.resources.items() if k in _KEYWORDS}
        custom = {k: v for k, v in self.resources.items() if k not in _KEYWORDS}
        options.setdefault("num_cpus", 1.0)
        return {**options, "resources": custom} if custom else options


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
    """A Ray actor's body: one model, loaded on its first chunk (so a load failure is the chunk's error)."""

    def __init__(self, spec: ModelSpec, options: LoadOptions) -> None:
        self.backend = LazyBackend(spec, options)

    def pid(self) -> int:
        """Answered once the actor is placed on a node (the driver sends it chunks only then)."""
        return os.getpid()

    def load(self) -> None:
        """The model loaded ahead of its first chunk; a failure is left for that chunk to report."""
        try:
            self.backend()
        except Exception as err:
            log.info("loading %s failed (its first chunk reports it): %s", self.backend.spec.label(), err)

    def score(
        self, task: TaskData, prompts: list[ItemRequests], chunk: Chunk, topk: int, tail: int, ref: PassResult | None
    ) -> tuple[PassResult, str | None]:
        """``chunk`` of a pass (``task``/``prompts``: its items only), and the note its token KL calls for."""
        backend = self.backend()
        reference, exact, note = choose_reference(backend, ref, self.backend.spec)
        rows = PassRows(topk=topk if ref is None else None, tail_samples=tail, reference=reference, exact=exact)
        local = dataclasses.replace(chunk, lo=0, hi=chunk.hi - chunk.lo)
        return local.run(backend, task, prompts, rows, None), note


@dataclass
class _Pass:
    """A (model, task) pass being filled: its chunks and those stored so far."""

    job: ModelJob
    work: TaskWork
    key: str
    chunks: list[Chunk]
    parts: dict[int, PassResult] = field(default_factory=dict)


@dataclass(eq=False)
class _Actor:
    handle: Any
    pid: int | None = None  # set once placed on a node
    busy: int = 0  # chunks sent and not back


@dataclass(eq=False)
class _Model:
    """A job's actors and the chunks waiting for one of them (an actor takes chunks only once it is placed, so a
    replica the cluster has no room for holds none; a model with nothing left to do gives its actors back)."""

    job: ModelJob
    actors: list[_Actor] = field(default_factory=list)
    queue: deque[tuple[_Pass, int]] = field(default_factory=deque)
    tasks_started: int = 0


class _Cluster:
    """The driver's side: actors by model, chunks in flight, passes stored as their chunks come back."""

    def __init__(
        self,
        ray: Any,
        placement: RayPlacement,
        jobs: Sequence[ModelJob],
        n_tasks: int,
        advance: Any,
        *,
        use_cache: bool,
    ) -> None:
        self.ray = ray
        self.placement = placement
        self.models = {id(job): _Model(job) for job in jobs}
        self.n_tasks = n_tasks
        self.advance = advance
        self.use_cache = use_cache
        self.run_id = uuid.uuid4().hex[:8]
        self.chunks: dict[Any, tuple[_Model, _Actor, _Pass, int]] = {}  # chunk sent → where it goes back
        self.placing: dict[Any, tuple[_Model, _Actor]] = {}  # actor's pid() asked → the actor, not yet placed
        self.base_rows: dict[str, Any] = {}  # task → the baseline's pass in the object store (rows, no scores)
        self.base_done: list[TaskWork] = []
        self.eager = False  # every actor started at once (the cluster has room for them all)

    def start_all(self) -> None:
        """Every model's actors started now, each loading its model while the baseline's first chunks run."""
        self.eager = True
        for model in self.models.values():
            self.add_actors(model)

    def busy(self) -> bool:
        return bool(self.chunks) or any(model.queue for model in self.models.values())

    def start(self, job: ModelJob, work: TaskWork) -> None:
        """Queue the chunks of ``job``'s pass over ``work`` that are not stored (a stored pass: none)."""
        model = self.models[id(job)]
        model.tasks_started += 1
        base = job.baseline
        base_key = base.scorer.pass_key(base.weights, work.digest, None) if base is not None else None
        key = job.scorer.pass_key(job.weights, work.digest, base_key)
        stored = job.scorer.store.load(key) if self.use_cache else None
        if stored is not None:
            self.advance(sum(len(p.requests) for p in work.prompts))
            self.finished(job, work, stored)
        else:
            run = _Pass(job, work, key, pass_chunks(key, work.prompts))
            for c, chunk in enumerate(run.chunks):
                part = job.scorer.store.load(chunk.key) if self.use_cache else None
                if part is None:
                    model.queue.append((run, c))
                else:
                    run.parts[c] = part
                    self.advance(chunk.n_requests)
            if len(run.parts) == len(run.chunks):
                self.complete(run)
        self.dispatch(model)

    def dispatch(self, model: _Model) -> None:
        """Send queued chunks to the model's placed actors (two each at most); start its actors if none is."""
        if model.queue and not model.actors:
            self.add_actors(model)
        for actor in model.actors:
            while model.queue and actor.pid is not None and actor.busy < _IN_FLIGHT:
                run, c = model.queue.popleft()
                self.send(model, actor, run, c)
        if not model.queue and model.tasks_started == self.n_tasks:  # nothing more will come: idle actors go
            for actor in [a for a in model.actors if a.busy == 0]:
                self.ray.kill(actor.handle, no_restart=True)
                model.actors.remove(actor)
            self.placing = {ref: (m, a) for ref, (m, a) in self.placing.items() if a in m.actors}

    def add_actors(self, model: _Model) -> None:
        remote = self.ray.remote(PassWorker)
        index = list(self.models).index(id(model.job))
        for r in range(self.placement.replicas):
            handle = remote.options(
                **self.placement.actor_options(),
                max_restarts=self.placement.max_restarts,
                max_task_retries=self.placement.max_restarts,
                name=f"flipscope-{self.run_id}-{index}-{r}",
                namespace="flipscope",
            ).remote(model.job.spec, model.job.options)
            actor = _Actor(handle)
            model.actors.append(actor)
            self.placing[handle.pid.remote()] = (model, actor)

    def send(self, model: _Model, actor: _Actor, run: _Pass, c: int) -> None:
        chunk, work = run.chunks[c], run.work
        ref = self.base_rows.get(work.task.name) if run.job.baseline else None
        topk, tail = run.job.scorer.settings.topk, run.job.scorer.settings.tail_samples
        items = dataclasses.replace(work.task, items=work.task.items[chunk.lo : chunk.hi])
        call = actor.handle.score.remote(items, work.prompts[chunk.lo : chunk.hi], chunk, topk, tail, ref)
        actor.busy += 1
        self.chunks[call] = (model, actor, run, c)

    def complete(self, run: _Pass) -> None:
        parts = [run.parts[c] for c in range(len(run.chunks))]
        self.finished(run.job, run.work, finish_pass(run.job.scorer.store, run.key, parts, use_cache=self.use_cache))

    def finished(self, job: ModelJob, work: TaskWork, result: PassResult) -> None:
        """A pass stored; the baseline's starts the candidates' passes of its task — or, where the cluster cannot
        hold every actor at once, of every task once the baseline has done them all (its actors then go, so a
        candidate's actor never waits for room a baseline's actor needs)."""
        if job.baseline is not None or work.task.name in self.base_rows:
            return
        self.base_rows[work.task.name] = self.ray.put(dataclasses.replace(result, scores=[]))
        self.base_done.append(work)
        if self.eager or len(self.base_done) == self.n_tasks:
            for done in [work] if self.eager else self.base_done:
                for model in self.models.values():
                    if model.job.baseline is not None:
                        self.start(model.job, done)

    def wait_one(self) -> None:
        """Wait for one answer (a chunk scored, or an actor placed) and act on it."""
        [done], _ = self.ray.wait([*self.chunks, *self.placing], num_returns=1)
        if done in self.placing:
            model, actor = self.placing.pop(done)
            actor.pid = self.get(done, model.job)
            actor.handle.load.remote()
            return self.dispatch(model)
        model, actor, run, c = self.chunks.pop(done)
        actor.busy -= 1
        part, note = self.get(done, model.job)
        if note is not None:
            run.job.scorer.note(note)
        run.parts[c] = run.job.scorer.store.save(part, replace=not self.use_cache)
        self.advance(run.chunks[c].n_requests)
        if len(run.parts) == len(run.chunks):
            self.complete(run)
        self.dispatch(model)

    def get(self, ref: Any, job: ModelJob) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the actor's error, or its death, turned into one line
            raise _cluster_error(job.spec, err, self.placement) from None

    def close(self) -> None:
        for model in self.models.values():
            for actor in model.actors:
                self.ray.kill(actor.handle, no_restart=True)


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
        cluster = _Cluster(ray, placement, jobs, len(tasks), advance, use_cache=use_cache)
        try:
            if check_feasible(ray, placement) >= len(jobs) * placement.replicas:
                cluster.start_all()
            for job in jobs:
                if job.baseline is None:
                    for work in tasks:
                        cluster.start(job, work)
            while cluster.busy():
                cluster.wait_one()
        finally:
            cluster.close()


@contextmanager
def connected(placement: RayPlacement) -> Iterator[Any]:
    """Ray, joined to ``placement.address`` (or a cluster started here for 'local'); left when done."""
    try:
        import ray
    except ImportError:
        raise FlipscopeError("--ray needs Ray, which is not installed", fix="pip install 'flipscope[ray]'") from None
    if ray.is_initialized():  # the caller's own connection: used, and left open
        yield ray
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    local = placement.address == "local"
    try:
        ray.init(
            address=None if local else placement.address,
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False if local else None,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise FlipscopeError(
            f"cannot join the Ray cluster at {placement.address}: {err}",
            fix="start one (ray start --head) or use --ray local; 'auto' needs a cluster started on this machine",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_feasible(ray: Any, placement: RayPlacement) -> int:
    """How many actors the cluster's live nodes can hold at once; none refused, before anything is sent."""
    need = {_NODE_NAMES.get(k, k): v for k, v in placement.resources.items()}
    need.setdefault("CPU", 1.0)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    room = sum(min((int(have.get(k, 0.0) // v) for k, v in need.items() if v > 0), default=1 << 20) for have in nodes)
    if room > 0:
        return room
    seen = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(h.items()) if not k.startswith("node:")) for h in nodes)
    raise FlipscopeError(
        f"no node of the Ray cluster at {placement.address} has what each actor asks for "
        f"({', '.join(f'{k}={v:g}' for k, v in need.items())}); its nodes have: {seen or 'none alive'}",
        fix="ask for less with --ray-resources, or add such a node to the cluster",
    )


def _cluster_error(spec: ModelSpec, err: Exception, placement: RayPlacement) -> FlipscopeError:
    cause = getattr(err, "cause", None)
    if isinstance(cause, FlipscopeError):
        return FlipscopeError(f"{spec.label()} on the Ray cluster: {cause}")
    if cause is not None:
        return FlipscopeError(f"{spec.label()} failed on the Ray cluster: {type(cause).__name__}: {cause}")
    return FlipscopeError(
        f"the Ray actor running {spec.label()} died and was not brought back after {placement.max_restarts} "
        f"restarts ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
        fix="the chunks already stored are kept in the cache: run the same command again to go on",
    )
