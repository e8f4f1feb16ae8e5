"""``flipscope report``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the recomputed summary as JSON instead of tables.")
def report_cmd(run_dir: str, as_json: bool) -> None:
    """Re-render a stored run's summary from its files, without loading any model."""
    import json
    from pathlib import Path

    from flipscope.report import load_run, print_run

    if (Path(run_dir) / "positions.parquet").is_file():
        from flipscope.report.kld_table import load_kld_run, print_kld_run

        kld_run = load_kld_run(run_dir)
        if as_json:
            click.echo(json.dumps({c: s.model_dump() for c, s in kld_run.summary.items()}, indent=2))
        else:
            print_kld_run(kld_run)
        return
    from flipscope.store.mtbench_run import is_mtbench

    if is_mtbench(Path(run_dir)):
        from flipscope.report.mtbench_table import load_mtbench_run, print_mtbench

        mt_run, summary = load_mtbench_run(run_dir)
        if as_json:
            click.echo(json.dumps(summary, indent=2, default=str))
        else:
            print_mtbench(mt_run, summary)
        return
    run = load_run(run_dir)
    if as_json:
        floor = run.noise_floor
        document = {
            "baseline": run.baseline.spec,
            "candidates": {c: {t: s.model_dump() for t, s in tasks.items()} for c, tasks in run.summary.items()},
            "noise_floor": None
            if floor is None
            else {"setup": floor.setup, "summary": {t: s.model_dump() for t, s in floor.summary.items()}},
        }
        click.echo(json.dumps(document, indent=2))
    else:
        print_run(run)
