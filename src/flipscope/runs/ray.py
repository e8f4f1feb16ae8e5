"""``compare --ray``: the multiple-choice passes a comparison needs, computed on a Ray cluster and stored in the
pass cache (``passes.ray_passes``) before the run is assembled from the cache as a local run is."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flipscope.errors import FlipscopeError
from flipscope.models import ModelSpec, fingerprint
from flipscope.passes.ray_cluster import RayPlacement
from flipscope.passes.ray_passes import ModelJob, fill_on_ray
from flipscope.passes.runner import ModelRunner, TaskWork

log = logging.getLogger(__name__)


def check_ray(
    placement: RayPlacement, *, device: str, sequential: bool, shard: bool, use_cache: bool, free: Sequence[str]
) -> None:
    """What ``--ray`` cannot be combined with, refused before anything loads (``free``: the free-form tasks, which
    run in this process)."""
    if free and device == "auto" and placement.resources.get("num_gpus", 0) > 0:
        raise FlipscopeError(
            f"--device auto with actors asking for GPUs means cuda, and {', '.join(free)} (free-form) would run on "
            "this machine's GPU: --ray places multiple-choice passes only",
            fix="give --device (cuda where this machine has a GPU), or run the free-form tasks without --ray",
        )
    if sequential:
        raise FlipscopeError(
            "--ray cannot run a --sequential comparison: its chunks are chosen one look at a time, on this machine",
            fix="drop --sequential, or run it without --ray",
        )
    if shard:
        raise FlipscopeError("--ray and --shard are two ways to spread one comparison", fix="use one of them")
    if not use_cache:
        raise FlipscopeError(
            "--ray stores every pass in the pass cache and assembles the run from it, so it cannot run with --no-cache",
            fix="give --cache-dir an empty folder to score every model again",
        )


def on_ray(
    placement: RayPlacement,
    runner: ModelRunner,
    floor_runner: ModelRunner | None,
    base_spec: ModelSpec,
    cand_specs: Sequence[ModelSpec],
    works: list[TaskWork],
    free: Sequence[str],
) -> None:
    """Every multiple-choice pass of the baseline, the candidates and the noise floor stored in the runners'
    cache, the missing ones scored on Ray; free-form tasks are left to this process (noted)."""
    base = ModelJob(base_spec, runner.options, runner.scorer, fingerprint(base_spec))
    jobs = [base] + [ModelJob(s, runner.options, runner.scorer, fingerprint(s), base) for s in cand_specs]
    if floor_runner is not None:
        jobs.append(ModelJob(base_spec, floor_runner.options, floor_runner.scorer, base.weights, base))
    fill_on_ray(jobs, works, placement, runner.display, use_cache=True)
    if free:
        runner.scorer.note(
            f"{', '.join(free)}: free-form tasks ran in this process, not on the Ray cluster (--ray places "
            "multiple-choice passes only)"
        )
