"""``flipscope``: a thin click group; each subcommand calls the public Python API."""

from __future__ import annotations

import logging
import sys

import click

from flipscope.cli.attribute import advise_cmd, attribute_cmd
from flipscope.cli.compare import compare_cmd, noise_floor_cmd
from flipscope.cli.compress import compress_cmd
from flipscope.cli.imports import import_group
from flipscope.cli.kld import kld_cmd
from flipscope.cli.listing import methods_cmd, models_cmd, tasks_cmd
from flipscope.cli.mtbench import judge_cmd, mtbench_cmd
from flipscope.cli.prompt import prompt_cmd
from flipscope.cli.report import report_cmd
from flipscope.cli.screen import screen_cmd
from flipscope.errors import FlipscopeError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="flipscope")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Does the compressed model still behave like its baseline?

    Compares a baseline LLM with compressed candidates item by item: accuracy and its change, flips
    (answers that changed from correct to incorrect and back), McNemar's paired test, and KL divergence.

    \b
    Start with:
      flipscope compare bundled:smollm2-135m +rtn:w8 +rtn:w4g64 --tasks mmlu --limit 200
      flipscope kld bundled:smollm2-135m +rtn:w8 +rtn:w4g64 --chunks 40
      flipscope mtbench bundled:smollm2-135m +rtn:w8 --judge openai:<url>#<model>
      flipscope report runs/<run> --html report.html
      flipscope import lm-eval LM_EVAL_OUT_BASE LM_EVAL_OUT_CAND
    """
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock", "torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))


cli.add_command(compare_cmd)
cli.add_command(noise_floor_cmd)
cli.add_command(report_cmd)
cli.add_command(compress_cmd)
cli.add_command(kld_cmd)
cli.add_command(mtbench_cmd)
cli.add_command(judge_cmd)
cli.add_command(import_group)
cli.add_command(attribute_cmd)
cli.add_command(advise_cmd)
cli.add_command(models_cmd)
cli.add_command(methods_cmd)
cli.add_command(tasks_cmd)
cli.add_command(prompt_cmd)
cli.add_command(screen_cmd)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except FlipscopeError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted; finished model passes are cached and are reused by the next run", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; finished model passes are cached and are reused by the next run", err=True)
        sys.exit(130)
