"""Text corpora for token-level distances (`flipscope kld`) and their windows.

Sources: a text file or a folder of ``.txt`` files; ``hf:<dataset>[:<config>[:<split>]]`` (wikitext-2 raw test is
``hf:wikitext:wikitext-2-raw-v1:test``) when ``datasets`` is installed and the hub answers; and, by default,
``python:pydoc_data.topics``, the English reference text that ships with CPython (~465k characters, offline).

Windows follow llama.cpp's perplexity tool: the token stream is cut into consecutive windows of ``ctx`` tokens; the
first token of each becomes BOS where the tokenizer adds one; the logits at positions ``first`` … ``ctx-2`` are
scored against the next token, with ``first = ctx − round(ctx · scored_fraction)`` (ctx/2 by default).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from flipscope._cache import user_path
from flipscope.errors import FlipscopeError

DEFAULT_CORPUS = "python:pydoc_data.topics"


@dataclass(frozen=True)
class Corpus:
    text: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Window:
    """One window of token ids; logits at positions first … len(ids)-2 are scored against the next token."""

    index: int
    ids: tuple[int, ...]
    first: int

    @property
    def scored(self) -> int:
        return len(self.ids) - 1 - self.first


def load_corpus(source: str | None = None) -> Corpus:
    """A corpus by name: a path, ``hf:<dataset>[:<config>[:<split>]]``, or ``python:pydoc_data.topics``."""
    name = source or DEFAULT_CORPUS
    if name == DEFAULT_CORPUS:
        from flipscope.compress._calibration import calibration_text

        return Corpus(calibration_text(), name)
    if name.startswith("hf:"):
        return _hub_corpus(name)
    path = user_path(name)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise FlipscopeError(f"corpus folder {path} holds no .txt files", fix="point --corpus at text files")
        return Corpus("\n\n".join(_read(f) for f in files), str(path))
    if path.is_file():
        return Corpus(_read(path), str(path))
    raise FlipscopeError(
        f"corpus {name!r} is not a file, a folder or a known source",
        fix=f"give a text file or folder, hf:<dataset>[:<config>[:<split>]], or {DEFAULT_CORPUS}",
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FlipscopeError(f"corpus file {path} is not UTF-8 text ({exc.reason})", fix="convert it to UTF-8") from exc


def _hub_corpus(name: str) -> Corpus:
    from flipscope._hub import load_hub_dataset

    dataset, config, split = ([*name.removeprefix("hf:").split(":"), "", ""])[:3]
    rows = load_hub_dataset(dataset, config, split or "test", asked_as=f"corpus {name}",
                            instead=f"a local text file, or the offline default {DEFAULT_CORPUS}")  # fmt: skip
    column = "text" if "text" in rows.column_names else rows.column_names[0]
    return Corpus("".join(str(t) for t in rows[column]), name)


def make_windows(
    ids: list[int], ctx: int, *, bos_id: int | None, scored_fraction: float = 0.5, max_windows: int | None = None
) -> list[Window]:
    """Consecutive windows of ``ctx`` tokens (a shorter tail is dropped, as llama.cpp does)."""
    if ctx < 2:
        raise FlipscopeError(f"--ctx must be ≥ 2, got {ctx}")
    if not 0 < scored_fraction <= 1:
        raise FlipscopeError(f"the scored fraction must be in (0, 1], got {scored_fraction}")
    first = min(ctx - 2, ctx - round(ctx * scored_fraction))
    count = len(ids) // ctx
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise FlipscopeError(
            f"the corpus has {len(ids)} tokens, fewer than one window of --ctx {ctx}", fix="lower --ctx"
        )
    windows = []
    for index in range(count):
        chunk = list(ids[index * ctx : (index + 1) * ctx])
        if bos_id is not None:
            chunk[0] = bos_id
        windows.append(Window(index, tuple(chunk), max(first, 0)))
    return windows
