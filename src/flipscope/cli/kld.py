"""``flipscope kld``."""

from __future__ import annotations

import click

from flipscope.cli.options import device_option, dtype_option, ray_options, ray_placement
from flipscope.tasks.corpus import DEFAULT_CORPUS


@click.command("kld")
@click.argument("baseline")
@click.argument("candidates", nargs=-1, required=True)
@click.option(
    "--corpus",
    default=DEFAULT_CORPUS,
    show_default=True,
    help="A text file or folder of .txt files, hf:<dataset>[:<config>[:<split>]] (hub), or the offline default.",
)
@click.option(
    "--ctx",
    default=512,
    show_default=True,
    help="Tokens per window (the first becomes BOS where the tokenizer adds one).",
)
@click.option(
    "--scored-fraction",
    default=0.5,
    show_default=True,
    help="Share of each window scored, from its end (llama.cpp: 0.5).",
)
@click.option("--chunks", "max_windows", type=int, default=None, help="Use only the first N windows.")
@click.option(
    "--store",
    type=click.Choice(["compact", "full", "live", "exact"]),
    default="compact",
    show_default=True,
    help="How the baseline is held: compact (top-k, rest mass, tail samples: KL estimated), full rows on disk "
    "(quantised, see --full-code; 'exact' is its former name), or live (exact, nothing stored).",
)
@click.option("--topk", default=64, show_default=True, help="Compact store: baseline log-probs kept per position.")
@click.option(
    "--tail-samples",
    default=64,
    show_default=True,
    help="Compact store: tail tokens sampled per position for an unbiased tail term (0: the pure lower bound).",
)
@click.option(
    "--full-code",
    "--exact-code",
    "full_code",
    type=click.Choice(["int16", "float16"]),
    default="int16",
    show_default=True,
    help="Full store: log-probs on a uint16 grid over 40 nats (6.1e-4 steps) or as float16 — both lossy.",
)
@click.option("--batch", default=1, show_default=True, help="Windows per forward pass.")
@click.option(
    "-o", "--out", type=click.Path(file_okay=False), default=None, help="Run directory. Default: runs/kld-<timestamp>."
)
@device_option
@dtype_option
@click.option("--no-cache", is_flag=True, help="Recompute the baseline store even if a cached one exists.")
@ray_options(
    "Build the baseline's store and measure the candidates on a Ray cluster: one actor per model (the store built "
    "by one, in window order; candidates in parallel, each sent the store's rows of its windows through Ray's "
    "object store as soon as they are stored)"
)
def kld_cmd(baseline: str, candidates: tuple[str, ...], corpus: str, ctx: int, scored_fraction: float,
            max_windows: int | None, store: str, topk: int, tail_samples: int, full_code: str, batch: int,
            out: str | None, device: str, dtype: str, no_cache: bool, ray_address: str | None,
            ray_resources: str | None, replicas: int | None) -> None:  # fmt: skip
    """Token-level KL and perplexity statistics of CANDIDATES against BASELINE on a text corpus.

    \b
    The statistics of llama.cpp's `llama-perplexity --kl-divergence` (PPL ratio, KL percentiles, Δp, same top
    token) plus reverse KL, top-k agreement for k = 1..10 and KL by the baseline's confidence. The baseline is
    stored once (cached) and reused for every candidate.
    \b
    Example:
      flipscope kld bundled:smollm2-135m +rtn:w8 +rtn:w4g64 --chunks 40
    """
    from flipscope.display import RichDisplay
    from flipscope.report.kld_table import print_kld_run
    from flipscope.runs.kld import KldSettings, kld

    settings = KldSettings(corpus=corpus, ctx=ctx, scored_fraction=scored_fraction, max_windows=max_windows,
                           store=store, topk=topk, tail_samples=tail_samples, full_code=full_code, batch=batch,
                           out=out, device=device, dtype=dtype, use_cache=not no_cache,
                           ray=ray_placement(ray_address, ray_resources, replicas))  # fmt: skip
    display = RichDisplay()
    result = kld(baseline, list(candidates), settings=settings, display=display)
    print_kld_run(result.run, display.console)
    click.echo(f"run directory: {result.out}")
