"""``flipscope import``: other tools' logs as flipscope runs."""

from __future__ import annotations

import click


@click.group("import")
def import_group() -> None:
    """Turn other tools' logs into flipscope run directories (no model is run)."""


@import_group.command("lm-eval")
@click.argument("baseline_dir", type=click.Path())
@click.argument("candidate_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--task", "tasks", multiple=True, help="Import only these tasks (default: every task of the baseline).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to write (default runs/lm-eval-<time>).")
def lm_eval_cmd(baseline_dir: str, candidate_dirs: tuple[str, ...], tasks: tuple[str, ...], out: str | None) -> None:
    """Flips, McNemar and choice KL from lm-evaluation-harness sample logs.

    BASELINE_DIR, CANDIDATE_DIRS: the --output_path folders of `lm_eval ... --log_samples` runs (the newest
    samples_<task>_<timestamp>.jsonl per task is read). Items are paired by doc_id; runs whose documents or prompts
    differ (doc_hash / prompt_hash: another few-shot setting or template) are refused. Multiple-choice tasks give
    accuracy, flips, all-flips, McNemar and choice KL from the logged log-likelihoods; generative tasks
    (exact_match, e.g. gsm8k) give correct/incorrect per item, flips and McNemar. The result is a normal run
    directory: `flipscope report` and the Python API read it.
    """
    from flipscope.report import load_run, print_run
    from flipscope.runs.lm_eval_import import import_lm_eval

    _, folder = import_lm_eval(baseline_dir, list(candidate_dirs), tasks=list(tasks) or None, out=out)
    print_run(load_run(folder))
    click.echo(f"run directory: {folder}")
