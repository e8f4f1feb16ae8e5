"""``flipscope screen``."""

from __future__ import annotations

import click

from flipscope.cli.options import batch_size_option, device_option, dtype_option, format_option


def _then(value: str | None) -> int | str | None:
    if value is None or value == "pareto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a count (e.g. 3) or 'pareto'") from None


@click.command("screen")
@click.argument("baseline")
@click.argument("candidates", nargs=-1)
@click.option(
    "--tasks",
    "-t",
    default="mmlu",
    show_default=True,
    help="Comma-separated tasks, as compare's --tasks (paper: the paper's suite; `flipscope tasks`).",
)
@click.option(
    "--sample",
    "-n",
    type=int,
    default=40,
    show_default=True,
    help="Items per task measured on every candidate (stratified by subject, --seed).",
)
@click.option(
    "--windows",
    type=int,
    default=8,
    show_default=True,
    help="Corpus windows for corpus KL (as kld --chunks; 0: none, then ranked by flips).",
)
@click.option("--ctx", type=int, default=512, show_default=True, help="Tokens per corpus window.")
@click.option("--corpus", default=None, help="Text for corpus KL, as kld's --corpus. Default: kld's offline default.")
@click.option("--calibrate", multiple=True, type=click.Path(file_okay=False),
              help="An earlier compare run directory (repeat for several): its (choice KL, flips) pairs on every "
              "item calibrate the prediction. Default: pairs measured on this sample.")  # fmt: skip
@click.option(
    "--then-compare",
    "then_compare",
    default=None,
    help="Then run the full compare (every item) on the K best by rank, or on 'pareto' (run fully? = yes).",
)
@click.option("--level", type=float, default=0.95, show_default=True, help="Level of the prediction intervals.")
@click.option("--fewshot", "-k", type=int, default=None, help="As compare's --fewshot.")
@format_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the item sample.")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory. Default: runs/screen-<timestamp>.",
)
@device_option
@dtype_option
@batch_size_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of the table.")
@click.option("--no-cache", is_flag=True, help="Run every model again instead of reusing cached passes.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache root (passes/ and kld/ under it). Default: $FLIPSCOPE_CACHE.",
)
def screen_cmd(baseline: str, candidates: tuple[str, ...], tasks: str, sample: int, windows: int, ctx: int,
               corpus: str | None, calibrate: tuple[str, ...], then_compare: str | None, level: float,
               fewshot: int | None, fmt: str, seed: int, out: str | None, device: str, dtype: str, batch_size: int,
               as_json: bool, no_cache: bool, cache_dir: str | None) -> None:  # fmt: skip
    """Screen a sweep of CANDIDATES cheaply: which few are worth a full compare?

    \b
    For every candidate: corpus KL on a few windows (kld, cached) and choice KL and flips on --sample items per
    task (compare, cached: the baseline runs once). From them, a predicted flip rate per task with a prediction
    interval: a line of log-odds(flips) on log(choice KL) fitted on measured (KL, flips) pairs — of --calibrate
    runs (every item), else of this sample, each candidate predicted from the other candidates' pairs only.
    Fewer than 3 pairs: no prediction, the sample's flips are shown instead.
    \b
    Ranked by corpus KL (lowest first; with --windows 0 by the sample's choice KL). Pareto set: nominal bits per
    weight against predicted flips (unknown size counts as no smaller). "run fully?": yes = on the Pareto set;
    maybe = off it, but no candidate at most as large has its whole interval below this one's; no = one does.
    \b
    Example:
      flipscope screen bundled:smollm2-135m +rtn:w8 +rtn:w4g64 +rtn:w3g64 +rtn:w2g64 --tasks paper --then-compare 2
    """
    import json

    from flipscope.display import RichDisplay
    from flipscope.report.screen_table import print_screen_run, screen_json
    from flipscope.runs.screen import ScreenSettings, screen
    from flipscope.tasks import split_tasks

    if not candidates:
        raise click.UsageError("name at least one CANDIDATE (e.g. +rtn:w4g64)")
    settings = ScreenSettings(tasks=split_tasks(tasks), sample=sample, windows=windows, ctx=ctx, corpus=corpus,
                              calibrate=list(calibrate), then_compare=_then(then_compare), level=level,
                              fewshot=fewshot, format=fmt, seed=seed, out=out, device=device, dtype=dtype,
                              batch_size=batch_size, use_cache=not no_cache, cache_dir=cache_dir)  # fmt: skip
    display = RichDisplay()
    result = screen(baseline, list(candidates), settings=settings, display=display)
    if as_json:
        click.echo(json.dumps(screen_json(result.run), indent=2))
        return
    print_screen_run(result.run)
    click.echo(f"run directory: {result.out}  (`flipscope report {result.out}`)")
