"""A Ray cluster as ``--ray`` uses it: where actors go and what each asks for (``RayPlacement``), joining the
cluster (or starting one here), refusing actors no node can hold, and Ray's errors as one line. The passes placed on
it are ``passes.ray_passes``'s."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.models import ModelSpec

log = logging.getLogger(__name__)

#: Resources an actor asks for by keyword; any other name is a custom resource (``--ray-resources``).
_KEYWORDS = {"num_cpus", "num_gpus", "memory"}
#: What those keywords are called in a node's resources (and read as the keywords in ``--ray-resources``).
_NODE_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
_KEYWORD_OF = {node: keyword for keyword, node in _NODE_NAMES.items() if node != keyword}
#: Environment passed to the actors: where flipscope and the hub keep models.
_ENV_PREFIXES = ("FLIPSCOPE_", "HF_")


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
            if not eq or not name.strip() or not math.isfinite(amount) or amount < 0:
                raise FlipscopeError(
                    f"--ray-resources: cannot read {part!r}", fix="give NAME=AMOUNT pairs, e.g. num_gpus=1,num_cpus=4"
                )
            wanted[_KEYWORD_OF.get(name.strip(), name.strip())] = amount
        return wanted

    def device(self, asked: str) -> str:
        """``--device`` as the actors use it: ``auto`` is theirs (cuda where they ask for GPUs), not the driver's."""
        if asked != "auto":
            return asked
        return "cuda" if self.resources.get("num_gpus", 0) > 0 else "cpu"

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {k: v for k, v in self.resources.items() if k in _KEYWORDS}
        custom = {k: v for k, v in self.resources.items() if k not in _KEYWORDS}
        options.setdefault("num_cpus", 1.0)
        return {**options, "resources": custom} if custom else options


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
            address=placement.address,  # 'local': a new cluster here, whatever RAY_ADDRESS says
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
    room = sum(min((math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0), default=1 << 20)
               for have in nodes)  # fmt: skip
    if room > 0:
        return room
    seen = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(h.items()) if not k.startswith("node:")) for h in nodes)
    raise FlipscopeError(
        f"no node of the Ray cluster at {placement.address} has what each actor asks for "
        f"({', '.join(f'{k}={v:g}' for k, v in need.items())}); its nodes have: {seen or 'none alive'}",
        fix="ask for less with --ray-resources, or add such a node to the cluster",
    )


def start_actor(ray: Any, body: type, placement: RayPlacement, name: str, *args: Any) -> Any:
    """An actor running ``body(*args)`` with what ``placement`` asks each actor for, restarted by Ray when it dies
    (its calls retried); named ``name`` in the ``flipscope`` namespace."""
    try:
        options = ray.remote(body).options(
            **placement.actor_options(),
            max_restarts=placement.max_restarts,
            max_task_retries=placement.max_restarts,
            name=name,
            namespace="flipscope",
        )
    except (ValueError, TypeError) as err:
        raise FlipscopeError(f"--ray-resources: Ray refuses them: {first_line(err)}") from None
    return options.remote(*args)


def give_back(ray: Any, handles: Sequence[Any]) -> None:
    """The actors killed, not restarted (a cluster already gone: nothing left to give back, and the run's error, if
    any, comes first)."""
    for handle in handles:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as err:
            log.debug("could not kill an actor: %s", err)


def cluster_error(spec: ModelSpec, err: Exception, placement: RayPlacement) -> FlipscopeError:
    cause = getattr(err, "cause", None)
    if isinstance(cause, FlipscopeError):
        return FlipscopeError(f"{spec.label()} on the Ray cluster: {cause}")
    if cause is not None:
        return FlipscopeError(f"{spec.label()} failed on the Ray cluster: {type(cause).__name__}: {first_line(cause)}")
    if getattr(err, "actor_init_failed", False) or type(err).__name__ == "RuntimeEnvSetupError":
        return FlipscopeError(
            f"Ray could not start the actor for {spec.label()}: {first_line(err)}",
            fix="every node needs flipscope (and what the model's source needs) installed in its Python",
        )
    if isinstance(err, ConnectionError):
        return FlipscopeError(
            f"lost the Ray cluster at {placement.address}: {first_line(err)}",
            fix="the chunks already stored are kept in the cache: run the same command again",
        )
    return FlipscopeError(
        f"the Ray actor running {spec.label()} died and was not brought back after {placement.max_restarts} "
        f"restarts ({type(err).__name__}: {first_line(err)})",
        fix="the chunks already stored are kept in the cache: run the same command again to go on",
    )


def first_line(err: object) -> str:
    return next(iter(str(err).strip().splitlines()), "")
