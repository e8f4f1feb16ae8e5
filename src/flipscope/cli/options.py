"""Options several commands share: one definition each, so that their flags read and default the same."""

from __future__ import annotations

import click

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
