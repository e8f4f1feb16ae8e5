"""Models loaded in Ray actors, used where a backend is (``mtbench --ray``): ``ray_models`` gives a loader whose
backends (``RayBackend``) send generation to the model's actors (``--replicas`` of them share each batch of
requests, split on the batch boundaries a local run uses) and score teacher-forced chunks where the model is
(``passes.stored.RemoteChunks``), so that the driver keeps every store exactly as a local run keeps it."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models import Backend, LoadOptions, ModelSpec
from flipscope.models.base import Decoding, Generation, GenRequest, OptionScores, RowSink
from flipscope.passes.ray_cluster import RayPlacement, cluster_error, connected, start_actor
from flipscope.passes.ray_passes import PassWorker
from flipscope.passes.stored import Chunk, PassRows
from flipscope.store import PassResult
from flipscope.tasks import ItemRequests, ScoreRequest, TaskData

log = logging.getLogger(__name__)

Loader = Callable[[ModelSpec, LoadOptions], Backend]


class RayBackend:
    """``spec`` loaded in ``handles`` (its actors): a backend whose work runs there."""

    def __init__(self, ray: Any, handles: list[Any], spec: ModelSpec, options: LoadOptions,
                 placement: RayPlacement) -> None:  # fmt: skip
        self.ray, self.handles, self.spec, self.options, self.placement = ray, handles, spec, options, placement
        self.loading = {h.describe.remote(): h for h in handles}  # replicas not yet loaded (or placed)
        self.ready: list[Any] = []
        first = next(iter(self.loading))
        self.info, chat = self.get(first)
        self.ready.append(self.loading.pop(first))
        self.chat_prompt: Callable[[GenRequest], str] | None = self._chat_prompt if chat else None
        self.turns = itertools.count()

    def get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.RayError, ConnectionError) as err:  # the actor's error, or its death: one line
            raise cluster_error(self.spec, err, self.placement) from None

    def actors(self) -> list[Any]:
        """The actors whose model has loaded (a replica the cluster has no room for yet takes no work)."""
        if self.loading:
            done, _ = self.ray.wait(list(self.loading), num_returns=len(self.loading), timeout=0)
            for ref in done:
                self.get(ref)
                self.ready.append(self.loading.pop(ref))
        return self.ready

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, *, advance: Callable[[int], None] | None = None
    ) -> list[Generation]:
        """Split across the loaded actors on the batch boundaries a local run uses (the same batches, padded alike)."""
        actors = self.actors()
        batch = max(1, self.options.batch_size)
        batches = -(-len(requests) // batch)
        per = batch * -(-batches // len(actors))  # whole batches per actor
        parts = [list(requests[i : i + per]) for i in range(0, len(requests), per)]
        calls = [a.generate.remote(part, decoding) for a, part in zip(actors, parts, strict=False)]
        made = [g for call in calls for g in self.get(call)]
        if advance is not None:
            advance(len(made))
        return made

    def _chat_prompt(self, request: GenRequest) -> str:
        text: str = self.get(self.next_actor().chat_prompt.remote(request))
        return text

    def run_chunk(self, chunk: Chunk, task: TaskData, prompts: list[ItemRequests], rows: PassRows) -> PassResult:
        result: PassResult = self.get(self.next_actor().run_chunk.remote(task, prompts, chunk, rows))
        return result

    def next_actor(self) -> Any:
        actors = self.actors()
        return actors[next(self.turns) % len(actors)]

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        raise FlipscopeError(f"{self.spec.label()} runs on Ray: its scoring passes are sent there as chunks")

    def vocabulary_pieces(self) -> list[str] | None:
        pieces: list[str] | None = self.get(self.next_actor().vocabulary_pieces.remote())
        return pieces

    def count_tokens(self, text: str) -> int | None:
        count: int | None = self.get(self.next_actor().count_tokens.remote(text))
        return count

    def close(self) -> None:
        for handle in self.handles:
            try:
                self.ray.kill(handle, no_restart=True)
            except Exception as err:  # the cluster gone: nothing left to give back
                log.debug("could not kill an actor of %s: %s", self.spec.label(), err)
        self.handles, self.ready, self.loading = [], [], {}


@contextmanager
def ray_models(placement: RayPlacement) -> Iterator[Loader]:
    """A loader of backends whose models load in Ray actors (``placement``'s resources, its replicas per model);
    every actor is given back on leaving, those of backends already closed sooner."""
    with connected(placement) as ray:
        made: list[RayBackend] = []
        run_id, numbers = uuid.uuid4().hex[:8], itertools.count()

        def load(spec: ModelSpec, options: LoadOptions) -> Backend:
            index = next(numbers)  # atomic under the GIL: models load from threads of their own
            handles = [start_actor(ray, PassWorker, placement, f"flipscope-{run_id}-m{index}-{r}", spec, options)
                           for r in range(placement.replicas)]  # fmt: skip
            try:
                backend = RayBackend(ray, handles, spec, options, placement)
            except BaseException:
                for handle in handles:
                    ray.kill(handle, no_restart=True)
                raise
            made.append(backend)
            return backend

        try:
            yield load
        finally:
            for backend in made:
                backend.close()
