"""``flipscope compress``."""

from __future__ import annotations

import click


@click.command("compress")
@click.argument("spec")
@click.option("--out", "-o", required=True, type=click.Path(), help="New folder to write (a .gguf file for gguf:).")
@click.option("--device", default="cpu", show_default=True, help="Where to run the compression.")
@click.option("--dtype", default="float32", show_default=True, help="Weights dtype.")
def compress_cmd(spec: str, out: str, device: str, dtype: str) -> None:
    """Save SPEC (e.g. bundled:smollm2-135m+rtn:w4g64) as a Hugging Face folder; compare it later as hf:OUT.

    A gguf: SPEC is written as a GGUF file by llama.cpp's own quantizer, with llama.cpp's recipe or per-tensor
    types from a plan (flipscope advise gguf:…), optionally with an importance matrix; its size, bits per weight
    and tensor types are printed. Use it later as gguf:OUT.

    \b
    Examples: flipscope compress gguf:smollm2-135m+ggml:Q4_K_M --out q4km.gguf
              flipscope compress gguf:smollm2-135m+ggml:plan=plan.json,imatrix=m.imatrix.gguf --out advised.gguf
    """
    from flipscope.models import parse_spec

    parsed = parse_spec(spec)
    if parsed.source == "gguf":
        from flipscope import save_gguf

        saved = save_gguf(parsed, out)
        types = "; ".join(f"{kind} {', '.join(f'{n} {t}' for t, n in sorted(c.items(), key=lambda kv: -kv[1]))}"
                          for kind, c in saved.types.items())  # fmt: skip
        click.echo(f"wrote {saved.path}: {saved.file_bytes / 2**20:.2f} MiB, {saved.bits_per_weight:.4f} bits per "
                   f"weight over {saved.weights:,} weights (tensor data, block scales included)")  # fmt: skip
        click.echo(f"tensor types (blk.N. left out): {types}")
        click.echo(f"use it as gguf:{saved.path}")
        return
    from flipscope import save_compressed

    folder = save_compressed(parsed, out, device=device, dtype=dtype)
    click.echo(f"saved to {folder}; use it as hf:{folder}")
