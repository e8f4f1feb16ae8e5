"""Models loaded in Ray actors, used where a backend is (``mtbench --ray``): ``ray_models`` gives a loader whose
backends (``RayBackend``) send each generation call, whole, to the model's actor and score teacher-forced chunks
where the model is (``passes.stored.RemoteChunks``), so that the driver keeps every store exactly as a local run
keeps it."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models import Backend, LoadOptions, ModelSpec
from flipscope.models.base import Decoding, Generation, GenRequest, OptionScores, RowSink
from flipscope.passes.ray_cluster import RayPlacement, check_feasible, cluster_error, connected, give_back, start_actor
from flipscope.passes.ray_passes import PassWorker
from flipscope.passes.stored import Chunk, PassRows
from flipscope.store import PassResult
from flipscope.tasks import ItemRequests, ScoreRequest, TaskData


class RayBackend:
    """``spec`` loaded in one Ray actor (``handle``): a backend whose work runs there."""

    def __init__(self, ray: Any, handle: Any, spec: ModelSpec, placement: RayPlacement) -> None:
        self.ray, self.handle, self.spec, self.placement = ray, handle, spec, placement
        self.info, chat = self.get(handle.describe.remote())  # the model loaded there
        self.chat_prompt: Callable[[GenRequest], str] | None = self._chat_prompt if chat else None

    def get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.RayError, ConnectionError) as err:  # the actor's error, or its death: one line
            raise cluster_error(self.spec, err, self.placement) from None

    def generate(
        self, requests: Sequence[GenRequest], decoding: Decoding, *, advance: Callable[[int], None] | None = None
    ) -> list[Generation]:
        """One call, whole, as a local run makes it: its batches (and a sampled call's one random stream) alike."""
        made: list[Generation] = self.get(self.handle.generate.remote(list(requests), decoding))
        if advance is not None:
            advance(len(made))
        return made

    def _chat_prompt(self, request: GenRequest) -> str:
        text: str = self.get(self.handle.chat_prompt.remote(request))
        return text

    def run_chunk(self, chunk: Chunk, task: TaskData, prompts: list[ItemRequests], rows: PassRows) -> PassResult:
        result: PassResult = self.get(self.handle.run_chunk.remote(task, prompts, chunk, rows))
        return result

    def score(
        self,
        requests: Sequence[ScoreRequest],
        *,
        rows: RowSink | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> list[OptionScores]:
        raise FlipscopeError(f"{self.spec.label()} runs on Ray: its scoring passes are sent there as chunks")

    def vocabulary_pieces(self) -> list[str] | None:
        pieces: list[str] | None = self.get(self.handle.vocabulary_pieces.remote())
        return pieces

    def count_tokens(self, text: str) -> int | None:
        count: int | None = self.get(self.handle.count_tokens.remote(text))
        return count

    def close(self) -> None:
        give_back(self.ray, [self.handle])


class RayModels:
    """Loads backends whose models run in Ray actors (one per model, ``placement``'s replicas aside, with its
    resources); ``stop``
    gives every actor back and refuses further loads, so that threads still using them end."""

    def __init__(self, ray: Any, placement: RayPlacement) -> None:
        check_feasible(ray, placement)
        self.ray, self.placement = ray, placement
        self.run_id, self.numbers = uuid.uuid4().hex[:8], itertools.count()
        self.handles: list[Any] = []
        self.stopped = False
        self.lock = threading.Lock()  # models load from threads of their own

    def load(self, spec: ModelSpec, options: LoadOptions) -> Backend:
        with self.lock:  # no actor started after ``stop`` has given them back
            if self.stopped:
                raise FlipscopeError(f"{spec.label()}: the run stopped before it loaded")
            name = f"flipscope-{self.run_id}-m{next(self.numbers)}"
            handle = start_actor(self.ray, PassWorker, self.placement, name, spec, options)
            self.handles.append(handle)
        return RayBackend(self.ray, handle, spec, self.placement)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            handles = list(self.handles)
        give_back(self.ray, handles)


@contextmanager
def ray_models(placement: RayPlacement) -> Iterator[RayModels]:
    """``RayModels`` on the cluster ``placement`` names; every actor given back on leaving."""
    with connected(placement) as ray:
        models = RayModels(ray, placement)
        try:
            yield models
        finally:
            models.stop()
