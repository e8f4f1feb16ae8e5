"""Options several commands share: one definition each, so that their flags read and default the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from flipscope.passes.ray_cluster import RayPlacement

#: --device, as every command that loads a model takes it.
device_option = click.option(
    "--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 … (auto: cuda if present)."
)
#: --dtype of the weights as loaded.
dtype_option = click.option(
    "--dtype", default="float32", show_default=True, help="Weights dtype: float32, bfloat16, float16."
)
#: --format of multiple-choice prompts (the parameter is named ``fmt``).
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["cloze", "letter"]),
    default="cloze",
    show_default=True,
    help="MMLU and your files: cloze scores each option's text; letter lists the options and scores ' A'..' D'. "
    "The other tasks use lm-eval's own format.",
)
#: --batch-size of scoring passes (part of the cache key).
batch_size_option = click.option(
    "--batch-size",
    type=int,
    default=16,
    show_default=True,
    help="Questions per forward pass (transformers backends); part of the cache key.",
)


def ray_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--ray [ADDRESS]``, ``--ray-resources`` and ``--replicas``: the work ``what`` says placed on a Ray cluster."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--replicas",
            type=int,
            default=None,
            help="(--ray) Actors per model, each taking a share of its work (data parallel). Default: 1.",
        )(command)
        command = click.option(
            "--ray-resources",
            metavar="NAME=N,…",
            default=None,
            help="(--ray) What each actor (one model) needs: num_cpus, num_gpus (e.g. 4 for a tensor-parallel vLLM "
            "model), memory in bytes, or a custom resource. Default: num_cpus=1.",
        )(command)
        return click.option(
            "--ray",
            "ray_address",
            metavar="[ADDRESS]",
            is_flag=False,
            flag_value="local",
            default=None,
            help=f"{what}; every result is stored here as a local run stores it. ADDRESS: auto (a cluster started "
            "on this machine), ray://HOST:10001, HOST:6379, or local (the default: start one here). Needs pip "
            "install 'flipscope[ray]'.",
        )(command)

    return decorate


def ray_placement(address: str | None, resources: str | None, replicas: int | None) -> RayPlacement | None:
    """The ``RayPlacement`` the ``ray_options`` flags ask for (None without ``--ray``)."""
    if address is None:
        given = [
            name for name, value in (("--ray-resources", resources), ("--replicas", replicas)) if value is not None
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --ray only: add --ray [ADDRESS]")
        return None
    from flipscope.passes.ray_cluster import RayPlacement

    wanted = RayPlacement.parse_resources(resources) if resources is not None else {"num_cpus": 1.0}
    return RayPlacement(address=address, resources=wanted, replicas=1 if replicas is None else replicas)
