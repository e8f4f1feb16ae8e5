"""``flipscope compare``."""

from __future__ import annotations

import click

from flipscope.cli.options import (
    batch_size_option,
    device_option,
    dtype_option,
    format_option,
    ray_options,
    ray_placement,
)
from flipscope.metrics.kl import DEFAULT_TAIL_SAMPLES, DEFAULT_TOPK


@click.command("compare")
@click.argument("baseline")
@click.argument("candidates", nargs=-1)
@click.option(
    "--tasks",
    "-t",
    default="mmlu",
    show_default=True,
    help="Comma-separated tasks, by lm-eval's names: mmlu, mmlu:<subject>[,<subject>…], arc_challenge, arc_easy, "
    "hellaswag, piqa, winogrande, boolq, openbookqa, sciq, copa, commonsense_qa, social_iqa, lambada (greedy "
    "match); generated: gsm8k, minerva_math500, humaneval and mbpp (programs run in a sandbox); "
    "paper (the paper's suite: mmlu … openbookqa); or a .jsonl/.csv/.parquet file "
    "(e.g. mmlu:anatomy,astronomy,my_questions.jsonl). "
    "`flipscope tasks` lists them.",
)
@click.option(
    "--limit",
    "-n",
    type=int,
    default=None,
    help="Evaluate N items per task, sampled stratified by subject with --seed. Default: all.",
)
@click.option(
    "--fewshot",
    "-k",
    type=int,
    default=None,
    help="Solved examples before each question (MMLU: its dev split; ARC: its validation split; gsm8k: the first K "
    "of its 8 chain-of-thought exemplars, as lm-eval's --num_fewshot; the others: their first K items, held out). "
    "Default: each task's standard count, 0 (gsm8k: 8).",
)
@format_option
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory to write. Default: runs/<timestamp>.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option(
    "--topk",
    type=int,
    default=DEFAULT_TOPK,
    show_default=True,
    help="Baseline log-probs kept per answer token for token KL (plus the tail's mass).",
)
@click.option(
    "--tail-samples",
    type=int,
    default=DEFAULT_TAIL_SAMPLES,
    show_default=True,
    help="Tail tokens sampled per answer token: makes the stored token KL unbiased (0: lower bound).",
)
@device_option
@dtype_option
@batch_size_option
@click.option(
    "--max-new-tokens",
    type=int,
    default=None,
    help="Free-form tasks: tokens generated at most per answer. Default: each task's (lm-eval's: 256; humaneval 1024).",
)
@click.option(
    "--samples",
    type=int,
    default=None,
    metavar="K",
    help="Free-form tasks: sample K answers per item and model (seeded) instead of one greedy answer. Accuracy "
    "is the mean pass@1 over the draws (pass@k where K allows); the baseline is also drawn K more times with the "
    "candidates' seeds, and its flips between the two sets (the sampling floor) are shown beside each "
    "candidate's. Every draw goes to draws.parquet.",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="(--samples) The draws' temperature. Default: 0.2, as lm-eval's sampled variants (humaneval_64).",
)
@click.option(
    "--noise-floor",
    is_flag=True,
    help="Also run the baseline again with another batch size (1, or 8 when --batch-size is 1) and pair it with "
    "itself: its flips are noise, shown beside every candidate's flips with its 95% interval.",
)
@click.option(
    "--noise-floor-batch", type=int, default=None, help="The noise floor's batch size (implies --noise-floor)."
)
@click.option(
    "--noise-floor-dtype", default=None, help="The noise floor's dtype, e.g. bfloat16 (implies --noise-floor)."
)
@click.option(
    "--sequential",
    is_flag=True,
    help="Score each task's items in a seeded random order, --chunk at a time, and stop each candidate on a task "
    "as soon as its question is decided: below or above --flip-budget; above the noise floor or within it "
    "(with --noise-floor); else its flip rate known to ± --precision points. Decisions use an anytime-valid "
    "confidence sequence, so looking after every chunk keeps the error rate at --alpha. --limit caps the items.",
)
@click.option(
    "--flip-budget",
    type=float,
    default=None,
    help="(--sequential, implied) Decide whether each candidate's flip rate is below or above P percent.",
)
@click.option(
    "--precision",
    type=float,
    default=2.0,
    show_default=True,
    help="(--sequential) Stop once the flip rate's interval is ± this many points (the noise floor's own stop).",
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="(--sequential) Chance that a (candidate, task) decision is wrong, however often the run looks.",
)
@click.option("--chunk", type=int, default=50, show_default=True, help="(--sequential) Items scored between looks.")
@click.option(
    "--shard",
    metavar="i/N|baseline",
    help="Run only part of the comparison into the pass cache, one part per job of a Slurm or Kubernetes array: "
    "'i/N' (0-based) runs the baseline's passes and every N-th candidate from the i-th; 'baseline' the baseline "
    "alone (a first job). The same compare without --shard, on the same --cache-dir, then assembles the whole run "
    "from the cache. Every job needs the same --device (not auto), --dtype and --batch-size: they key the passes. "
    "The cache folder may be shared by machines where flock and renames hold (NFSv4, Lustre with -o flock, GPFS, "
    "CephFS).",
)
@ray_options(
    "Score the models' multiple-choice passes on a Ray cluster: one actor per model (candidates in parallel), "
    "the baseline's rows sent through Ray's object store"
)
@click.option("--no-cache", is_flag=True, help="Run every model again instead of reusing cached passes.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where model passes are cached. Default: $FLIPSCOPE_CACHE/passes (~/.cache/flipscope/passes).",
)
def compare_cmd(
    baseline: str,
    candidates: tuple[str, ...],
    tasks: str,
    limit: int | None,
    fewshot: int | None,
    fmt: str,
    out: str | None,
    seed: int,
    topk: int,
    tail_samples: int,
    device: str,
    dtype: str,
    batch_size: int,
    max_new_tokens: int | None,
    samples: int | None,
    temperature: float | None,
    noise_floor: bool,
    noise_floor_batch: int | None,
    noise_floor_dtype: str | None,
    sequential: bool,
    flip_budget: float | None,
    precision: float,
    alpha: float,
    chunk: int,
    shard: str | None,
    ray_address: str | None,
    ray_resources: str | None,
    replicas: int | None,
    no_cache: bool,
    cache_dir: str | None,
) -> None:
    """Compare BASELINE with each CANDIDATE, item by item.

    \b
    Model specs:
      bundled:smollm2-135m             the bundled SmolLM2-135M-Instruct (default baseline)
      hf:<folder or hub id>            any transformers causal LM
      <spec>+rtn:w4g64                compressed on the fly (RTN, 4 bits, group 64)
      +rtn:w8                          (candidates) the baseline, compressed
    The baseline is run once and cached; each candidate costs one model pass.
    """
    from flipscope import CompareSettings, compare
    from flipscope.display import RichDisplay
    from flipscope.metrics.sequential import SequentialPlan
    from flipscope.report import print_run
    from flipscope.runs.noise import NoiseFloor
    from flipscope.runs.shards import Shard
    from flipscope.tasks import split_tasks

    floor = None
    if noise_floor or noise_floor_batch is not None or noise_floor_dtype is not None:
        floor = NoiseFloor(noise_floor_batch or NoiseFloor.default(batch_size).batch_size, noise_floor_dtype)
    if not candidates and floor is None:
        raise click.UsageError("name at least one CANDIDATE (e.g. +rtn:w4g64), or ask for --noise-floor")
    plan = None
    context = click.get_current_context()
    given = [f"--{n}" for n in ("precision", "alpha", "chunk")
             if context.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]  # fmt: skip
    if given and not (sequential or flip_budget is not None):
        verb = "applies" if len(given) == 1 else "apply"
        raise click.UsageError(f"{', '.join(given)} {verb} to sequential runs only: add --sequential")
    if sequential or flip_budget is not None:
        plan = SequentialPlan(flip_budget=flip_budget, precision=precision, alpha=alpha, chunk=chunk)
    settings = CompareSettings(
        tasks=split_tasks(tasks),
        limit=limit,
        fewshot=fewshot,
        format=fmt,
        seed=seed,
        topk=topk,
        tail_samples=tail_samples,
        out=out,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        samples=samples,
        temperature=temperature,
        noise_floor=floor,
        use_cache=not no_cache,
        cache_dir=cache_dir,
        sequential=plan,
        shard=Shard.parse(shard) if shard is not None else None,
        ray=ray_placement(ray_address, ray_resources, replicas),
    )
    display = RichDisplay()
    result = compare(baseline, list(candidates), settings=settings, display=display)
    print_run(result.run)
    click.echo(f"run written to {result.out}  (records.parquet, run.json; `flipscope report {result.out}`)")


def _noise_floor_only(**kwargs: object) -> None:
    compare_cmd.callback(candidates=(), **{**kwargs, "noise_floor": True})  # type: ignore[misc]


noise_floor_cmd = click.Command(
    "noise-floor",
    params=[p for p in compare_cmd.params if p.name not in ("candidates", "noise_floor")],
    callback=_noise_floor_only,
    help="The noise floor of BASELINE alone: the baseline run again with another batch size (1, or 8 when "
    "--batch-size is 1; or --noise-floor-batch / --noise-floor-dtype) and paired with itself — the flips and KL "
    "that no compression caused. Same options as `compare`.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
