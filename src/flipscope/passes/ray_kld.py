"""``kld --ray``: the baseline's store and the candidates' columns computed by Ray actors, stored by the driver as a
local run stores them (``passes.kld``). The baseline's store is built by one actor, stretch by stretch in window
order (its tail samples come from one generator carried across windows: the driver sends the generator's state with
each stretch and checkpoints the store after it, so a restarted actor draws the same samples). Each candidate's
stretch of windows is sent, with the store's rows of those windows copied out of it (no shared file system), as
soon as the store holds them; ``--replicas`` actors per candidate share its stretches. The columns that come back
are stored as a local run's are (``PositionParts``), so an interrupted run resumes either way."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flipscope.display import Display
from flipscope.models import LoadOptions, ModelSpec
from flipscope.models.base import CorpusBackend
from flipscope.passes import kld
from flipscope.passes.kld import (
    CorpusSetup,
    Plan,
    check_vocabulary,
    corpus_backend,
    first_position,
    join_columns,
    make_plan,
    measure_windows,
    open_store,
    parts_folder,
    plan_from_store,
    store_header,
    store_key,
    store_rows,
    stretch_windows,
    tail_generator,
)
from flipscope.passes.ray_cluster import RayPlacement, check_feasible, cluster_error, connected, give_back, start_actor
from flipscope.plumbing.atomic import exclusive
from flipscope.store.baseline_rows import BaselineStore, StoredSlice, StoreHeader
from flipscope.store.kld_parts import Columns, PositionParts
from flipscope.tasks.corpus import Window

#: Bytes of baseline rows sent with one stretch at most (a full store's rows are 2 B × vocabulary per position).
STRETCH_BYTES = 64 << 20
_IN_FLIGHT = 2


class CorpusWorker:
    """A Ray actor's body for ``kld``: one model, loaded on its first call."""

    def __init__(self, spec: ModelSpec, options: LoadOptions) -> None:
        self.spec, self.options = spec, options
        self.loaded: CorpusBackend | None = None

    def backend(self) -> CorpusBackend:
        if self.loaded is None:
            self.loaded = corpus_backend(self.spec, self.options)
        return self.loaded

    def pid(self) -> int:
        return os.getpid()

    def describe(self) -> tuple[str, int, dict[str, Any]]:
        """(tokenizer fingerprint, vocabulary size, details) — the model loaded."""
        info = self.backend().info
        return info.tokenizer_fingerprint, info.vocab_size, dict(info.details)

    def plan(self, text: str, setup: CorpusSetup) -> Plan:
        return make_plan(self.backend(), text, setup.ctx, setup.scored_fraction, setup.max_windows)

    def build(
        self, windows: list[Window], setup: CorpusSetup, header: StoreHeader, state: np.ndarray | None, label: str
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The store's arrays for ``windows`` (their positions in order), and the tail generator's state after."""
        generator = tail_generator(state)
        made = list(store_rows(self.backend(), windows, setup, header, generator, label=label))
        return {n: np.concatenate([m[n] for m in made]) for n in made[0]}, generator.get_state().numpy()

    def measure(self, windows: list[Window], stored: StoredSlice, setup: CorpusSetup) -> Columns:
        return measure_windows(self.backend(), None, stored, windows, stored.start, setup.batch, setup.rows)

    def decode(self, pieces: list[list[int]]) -> list[str]:
        backend = self.backend()
        return [backend.decode(ids) for ids in pieces]


@dataclass(eq=False)
class _Candidate:
    spec: ModelSpec
    parts: PositionParts
    resumed: list[Columns]
    todo: deque[int]  # first windows of the stretches left to send
    made: dict[int, Columns] = field(default_factory=dict)
    actors: list[Any] = field(default_factory=list)
    ready: dict[int, int] = field(default_factory=dict)  # actor index → chunks in flight (once it has loaded)
    details: dict[str, Any] | None = None
    columns: Columns | None = None
    decoded: list[str] = field(default_factory=list)


@dataclass
class RayKld:
    """What ``kld --ray`` hands back: the baseline's store, its windows, and each candidate's columns, details
    and the texts of the token lists ``pick`` chose from its columns."""

    stored: BaselineStore
    plan: Plan
    columns: dict[str, Columns]
    details: dict[str, dict[str, Any]]
    texts: dict[str, list[str]]


def kld_on_ray(
    placement: RayPlacement,
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    text: Any,
    options: LoadOptions,
    setup: CorpusSetup,
    *,
    folder: Path,
    use_cache: bool,
    pick: Callable[[Columns, Plan], list[list[int]]],
    display: Display,
) -> RayKld:
    """The baseline's store (built on Ray where the cache lacks it) and every candidate's columns, measured on Ray;
    ``pick``: the token lists of a candidate's columns whose text the run shows (decoded by its actor)."""
    key, settings_key = store_key(base_spec, text, options, setup)
    stored = BaselineStore.open(folder / key) if use_cache else None
    with connected(placement) as ray, contextlib.ExitStack() as held:
        check_feasible(ray, placement)
        run = _KldRun(ray, placement, options, setup, pick, corpus=text.sha256)
        try:
            wheres = [parts_folder(folder, key, spec, setup) for spec in cand_specs]
            for where in sorted(set(wheres)):  # all first (waiting for one stalls no work here), in one order
                held.enter_context(exclusive(where))
            if stored is None:  # one process builds it; another waits, then finds it (held until it is finished)
                run.store_lock.enter_context(exclusive(folder / key))
                stored = BaselineStore.open(folder / key) if use_cache else None
            if stored is None:
                if not use_cache:
                    shutil.rmtree(folder / key, ignore_errors=True)
                run.begin_store(base_spec, text, folder / key, settings_key)
            else:
                run.store_lock.close()
                run.set_store(stored, plan_from_store(stored, setup.ctx, setup.scored_fraction))
            total = len(run.plan.windows) * (1 + len(cand_specs))
            run.advance = held.enter_context(display.progress(f"kld on Ray ({placement.address})", total))
            run.advance(run.ready_windows)
            if run.base is not None:
                run.next_stretch()
            for spec, where in zip(cand_specs, wheres, strict=True):
                run.add_candidate(spec, PositionParts(where if use_cache else None))
            run.finish()
        finally:
            run.close()
    assert run.store is not None
    return RayKld(
        run.store,
        run.plan,
        {c.spec.label(): c.columns for c in run.candidates if c.columns is not None},
        {c.spec.label(): c.details or {} for c in run.candidates},
        {c.spec.label(): c.decoded for c in run.candidates},
    )


class _KldRun:
    """The driver's side: the baseline actor's stretches chained one after another, candidates' actors fed the
    stretches the store already holds, every answer stored as it comes back."""

    def __init__(self, ray: Any, placement: RayPlacement, options: LoadOptions, setup: CorpusSetup,
                 pick: Callable[[Columns, Plan], list[list[int]]], *, corpus: str) -> None:  # fmt: skip
        self.ray, self.placement, self.options, self.setup, self.pick = ray, placement, options, setup, pick
        self.corpus = corpus  # its sha256
        self.run_id = uuid.uuid4().hex[:8]
        self.store: BaselineStore | None = None
        self.plan = Plan([], [], "", 0)
        self.ready_windows = 0  # windows the store holds
        self.size = 1  # windows per stretch
        self.base: tuple[Any, ModelSpec] | None = None  # the baseline's actor while it builds
        self.candidates: list[_Candidate] = []
        self.calls: dict[Any, Callable[[Any], None]] = {}  # call in flight → what to do with its answer
        self.specs: dict[Any, ModelSpec] = {}  # call in flight → whose model (for its error)
        self.owners: dict[Any, _Candidate | None] = {}  # call in flight → whose (None: the baseline's)
        self.advance: Callable[[int], None] = lambda n: None
        self.store_lock = contextlib.ExitStack()  # held while the store is built here

    def begin_store(self, spec: ModelSpec, text: Any, folder: Path, settings: dict[str, Any]) -> None:
        """The baseline's actor started, its windows planned there, the store begun or resumed here."""
        actor = start_actor(self.ray, CorpusWorker, self.placement, f"flipscope-{self.run_id}-kld-b", spec,
                            self.options)  # fmt: skip
        self.base = (actor, spec)
        plan: Plan = self.get(actor.plan.remote(text.text, self.setup), spec)
        header = store_header(plan, self.setup.kind_on_disk, text.sha256, settings, self.setup, label=spec.label())
        self.set_store(open_store(folder, header, plan), plan)

    def set_store(self, store: BaselineStore, plan: Plan) -> None:
        self.store, self.plan = store, plan
        self.ready_windows = len(plan.windows) if store.header.complete else store.header.done_windows
        per_window = store.header.bytes_per_position() * plan.windows[0].scored
        self.size = stretch_windows(self.setup.batch, max(1, min(kld.PART_WINDOWS, int(STRETCH_BYTES // per_window))))

    def next_stretch(self) -> None:
        """The baseline's next stretch sent (with the generator's state at the store's checkpoint), or the store
        finished and its actor given back."""
        assert self.store is not None and self.base is not None
        actor, spec = self.base
        done = self.store.header.done_windows
        if done == len(self.plan.windows):
            self.store.finish()
            self.store_lock.close()
            give_back(self.ray, [actor])
            self.base = None
            return
        windows = self.plan.windows[done : done + self.size]
        call = actor.build.remote(windows, self.setup, self.store.header, self.store.rng_state(), spec.label())

        def stored(answer: Any, at: int = self.store.header.done_positions) -> None:
            assert self.store is not None
            arrays, state = answer
            self.store.put(at, arrays)
            self.store.checkpoint(done + len(windows), at + len(arrays["logp"]), state)
            self.ready_windows = done + len(windows)
            self.advance(len(windows))
            self.next_stretch()
            for candidate in self.candidates:
                self.dispatch(candidate)

        self.send(call, spec, stored, None)

    def add_candidate(self, spec: ModelSpec, parts: PositionParts) -> None:
        """Its actors started (every replica loading its model), its stretches queued from where its stored
        columns end."""
        done, resumed = parts.resume()
        candidate = _Candidate(spec, parts, resumed, deque(range(done, len(self.plan.windows), self.size)))
        self.candidates.append(candidate)
        self.advance(done)
        index = len(self.candidates)
        for r in range(self.placement.replicas):
            name = f"flipscope-{self.run_id}-kld-{index}-{r}"
            actor = start_actor(self.ray, CorpusWorker, self.placement, name, spec, self.options)
            candidate.actors.append(actor)
            self.send(actor.describe.remote(), spec, functools.partial(self.loaded, candidate, r), candidate)

    def loaded(self, candidate: _Candidate, replica: int, answer: tuple[str, int, dict[str, Any]]) -> None:
        tokenizer, vocab, details = answer
        if candidate.details is None:
            assert self.store is not None
            check_vocabulary(candidate.spec.label(), tokenizer, vocab, self.store, self.plan, self.corpus)
            candidate.details = details
        candidate.ready[replica] = 0
        self.dispatch(candidate)

    def dispatch(self, candidate: _Candidate) -> None:
        """Stretches the store holds sent to the candidate's loaded actors (two each at most); a candidate with
        all its columns back finished."""
        assert self.store is not None
        for r, busy in candidate.ready.items():
            while busy < _IN_FLIGHT and candidate.todo and self.stretch_end(candidate.todo[0]) <= self.ready_windows:
                start = candidate.todo.popleft()
                end = self.stretch_end(start)
                at = first_position(self.plan, start)
                rows = self.store.slice(at, first_position(self.plan, end))
                call = candidate.actors[r].measure.remote(self.plan.windows[start:end], rows, self.setup)
                self.send(call, candidate.spec, functools.partial(self.measured, candidate, r, start), candidate)
                busy += 1
            candidate.ready[r] = busy
        if not candidate.todo and not any(candidate.ready.values()) and candidate.ready and candidate.columns is None:
            self.finish_candidate(candidate)

    def stretch_end(self, start: int) -> int:
        return min(start + self.size, len(self.plan.windows))

    def measured(self, candidate: _Candidate, replica: int, start: int, cols: Columns) -> None:
        end = self.stretch_end(start)
        candidate.parts.save(start, end, cols)
        candidate.made[start] = cols
        candidate.ready[replica] -= 1
        self.advance(end - start)
        self.dispatch(candidate)

    def finish_candidate(self, candidate: _Candidate) -> None:
        """Its columns joined in window order, the text of the positions the run shows decoded by its actor, and
        its actors given back."""
        candidate.columns = join_columns([*candidate.resumed, *(candidate.made[s] for s in sorted(candidate.made))])
        actor = candidate.actors[next(iter(candidate.ready))]
        candidate.decoded = self.get(actor.decode.remote(self.pick(candidate.columns, self.plan)), candidate.spec)
        give_back(self.ray, candidate.actors)
        candidate.actors = []
        for call in [c for c, whose in self.owners.items() if whose is candidate]:  # a replica never placed
            del self.calls[call], self.specs[call], self.owners[call]

    def send(self, call: Any, spec: ModelSpec, then: Callable[[Any], None], owner: _Candidate | None) -> None:
        self.owners[call] = owner
        self.calls[call] = then
        self.specs[call] = spec

    def finish(self) -> None:
        """Every answer waited for and acted on."""
        while self.calls:
            try:
                [done], _ = self.ray.wait(list(self.calls), num_returns=1)
            except ConnectionError as err:  # the cluster lost: one line
                raise cluster_error(next(iter(self.specs.values())), err, self.placement) from None
            then, spec = self.calls.pop(done), self.specs.pop(done)
            del self.owners[done]
            then(self.get(done, spec))
        missing = [c.spec.label() for c in self.candidates if c.columns is None]
        assert not missing, f"candidates left unmeasured: {missing}"

    def get(self, ref: Any, spec: ModelSpec) -> Any:
        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.RayError, ConnectionError) as err:  # the actor's error, or its death: one line
            raise cluster_error(spec, err, self.placement) from None

    def close(self) -> None:
        self.store_lock.close()
        give_back(self.ray, [c for candidate in self.candidates for c in candidate.actors])
        if self.base is not None:
            give_back(self.ray, [self.base[0]])
