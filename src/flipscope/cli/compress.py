"""``flipscope compress``."""

from __future__ import annotations

import click


@click.command("compress")
@click.argument("spec")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="New folder to write.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the compression.")
@click.option("--dtype", default="float32", show_default=True, help="Weights dtype.")
def compress_cmd(spec: str, out: str, device: str, dtype: str) -> None:
    """Save SPEC (e.g. bundled:smollm2-135m+rtn:w4g64) as a Hugging Face folder; compare it later as hf:OUT."""
    from flipscope import save_compressed

    folder = save_compressed(spec, out, device=device, dtype=dtype)
    click.echo(f"saved to {folder}; use it as hf:{folder}")
