"""``flipscope prompt``."""

from __future__ import annotations

import json

import click


@click.command("prompt")
@click.argument("model")
@click.argument("text")
@click.option("--chat", is_flag=True, help="A chat request: TEXT as the user's message in the model's chat template.")
@click.option("--system", default=None, help="A system message before TEXT (with --chat).")
@click.option("--json", "as_json", is_flag=True, help='Print {"text": …, "ids": […], "pieces": […]} instead.')
def prompt_cmd(model: str, text: str, chat: bool, system: str | None, as_json: bool) -> None:
    """Show the token ids (and each one's text) MODEL is given for TEXT, as generation gives them.

    For checking chat templates and BOS: a chat request's ids are exactly what the tokenizer's own chat template
    gives (for gguf:, what llama.cpp feeds for the file's template). Loads the tokenizer only, not the weights.

    \b
      flipscope prompt hf:DIR "Hello" --chat --json
    """
    from flipscope.runs.prompt import prompt_tokens

    shown = prompt_tokens(model, text, chat=chat, system=system)
    if as_json:
        click.echo(json.dumps({"text": shown.text, "ids": list(shown.ids), "pieces": list(shown.pieces)},
                              ensure_ascii=False))  # fmt: skip
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if chat and not shown.chat:
        console.print(f"{escape(model)} has no chat template: it is given the plain text (a transcript)")
    console.print(f"[bold]text[/bold] ({len(shown.ids)} tokens): {escape(json.dumps(shown.text, ensure_ascii=False))}")
    table = Table(title_justify="left")
    for name, justify in (("#", "right"), ("id", "right"), ("piece", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for position, (token, piece) in enumerate(zip(shown.ids, shown.pieces, strict=True)):
        table.add_row(str(position), str(token), escape(json.dumps(piece, ensure_ascii=False)))
    console.print(table)
