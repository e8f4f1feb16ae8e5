"""``flipscope report``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the recomputed summary as JSON instead of tables.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Write one self-contained HTML page (summary, plots, flips explorer; opens offline).",
)
@click.option(
    "--md",
    "md_path",
    type=click.Path(dir_okay=False),
    help="Write Markdown (summary table, key plots as PNGs in <name>_files/ beside it) for model cards and PRs.",
)
def report_cmd(run_dirs: tuple[str, ...], as_json: bool, html_path: str | None, md_path: str | None) -> None:
    """Re-render stored runs from their files, without loading any model.

    RUN_DIRS: folders written by `flipscope compare`, `kld`, `mtbench`, `attribute` or `import`. Without
    --html/--md each is printed as tables. With --html and/or --md, all of them go into one report; they must
    share one baseline.
    """
    if html_path or md_path:
        from flipscope.report.collect import collect

        data = collect(run_dirs)
        if html_path:
            from flipscope.report.html import write_html

            click.echo(f"wrote {write_html(data, html_path)}")
        if md_path:
            from flipscope.report.markdown import write_markdown

            click.echo(f"wrote {write_markdown(data, md_path)}")
        return
    for run_dir in run_dirs:
        _print_one(run_dir, as_json=as_json)


def _print_one(run_dir: str, *, as_json: bool) -> None:
    import json
    from pathlib import Path

    from flipscope.report.collect import RunKind, run_kind

    kind = run_kind(Path(run_dir))
    if kind is RunKind.SCREEN:
        from flipscope.report.screen_load import load_screen_run
        from flipscope.report.screen_table import print_screen_run, screen_json

        screened = load_screen_run(run_dir)
        click.echo(json.dumps(screen_json(screened), indent=2)) if as_json else print_screen_run(screened)
        return
    if kind is RunKind.ATTRIBUTE:
        from flipscope.report.attribute_table import print_attribution
        from flipscope.store.attribute_run import read_attribution

        attribution = read_attribution(Path(run_dir))
        if as_json:
            click.echo(attribution.model_dump_json(indent=2))
        else:
            print_attribution(attribution)
        return
    if kind is RunKind.KLD:
        from flipscope.report.kld_table import load_kld_run, print_kld_run

        kld_run = load_kld_run(run_dir)
        if as_json:
            click.echo(json.dumps({c: s.model_dump() for c, s in kld_run.summary.items()}, indent=2))
        else:
            print_kld_run(kld_run)
        return
    if kind is RunKind.MTBENCH:
        from flipscope.report.mtbench_table import load_mtbench_run, print_mtbench

        mt_run, summary = load_mtbench_run(run_dir)
        if as_json:
            click.echo(json.dumps(summary, indent=2, default=str))
        else:
            print_mtbench(mt_run, summary)
        return
    from flipscope.report import load_run, print_run

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
