"""Exactly the items flipscope evaluates, as a task lm-evaluation-harness 0.4.13 runs with its own stock config:
the rows in the hub's schema (the fields that config reads) in a local JSONL file, and a YAML that includes the
stock config with the data set pointed at that file. Used to check flipscope against lm-eval item by item
(tests/test_lm_eval_agreement.py) and to time both on the same work (benchmarks/mcq_throughput.py); users can
run it to see lm-eval's own numbers on flipscope's sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_atomically
from flipscope.tasks.items import LETTERS
from flipscope.tasks.lambada import load_lambada, passage
from flipscope.tasks.olmo import arrow_rows
from flipscope.tasks.suite import SUITE

#: Suite task → (its stock config under lm_eval/tasks, the split the exported file fills).
STOCK = {
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "validation"),
    "lambada": ("lambada/lambada_openai.yaml", "test"),
}
_FOLDERS = {
    "hellaswag": "hellaswag/none",
    "piqa": "piqa/plain_text",
    "winogrande": "winogrande/winogrande_xl",
    "boolq": "boolq/none",
    "openbookqa": "openbookqa/main",
}


def _hub_rows(name: str) -> dict[str, dict[str, Any]]:
    """Item id → the row in the hub's schema, ids as the suite's loaders give them."""
    if name == "lambada":  # EleutherAI/lambada_openai's one field, the passage, rebuilt from each item
        return {item.item_id: {"text": passage(item)} for item in load_lambada()}
    if name.startswith("arc_"):  # the test set exists only as oe-eval docs: rebuilt from the suite's own items
        out = {}
        for item in SUITE[name].load():
            labels = list(LETTERS[: len(item.choices)])
            choices = {"text": list(item.choices), "label": labels}
            out[item.item_id] = {"id": item.item_id, "question": item.question, "choices": choices,
                                 "answerKey": labels[item.answer]}  # fmt: skip
        return out
    rows = arrow_rows(f"{_FOLDERS[name]}/validation", rows=None, fields=set())
    if name == "openbookqa":
        return {str(r["id"]): r for r in rows}
    if name == "boolq":  # lm-eval reads super_glue's copy: `label` 1 = yes
        rows = [{"passage": r["passage"], "question": r["question"], "label": int(r["answer"])} for r in rows]
    return {str(i): r for i, r in enumerate(rows)}


def export_task(name: str, item_ids: list[str], folder: Path) -> str:
    """Write ``fs_<name>.yaml`` and its data into ``folder`` (pass it as lm-eval's include path); returns the
    task name to ask lm-eval for. The rows keep the order of ``item_ids``, so lm-eval's doc_id i is item i."""
    import lm_eval

    if name not in STOCK:
        raise FlipscopeError(f"no lm-eval export for task {name!r}", fix=f"use one of {', '.join(STOCK)}")
    stock, split = STOCK[name]
    rows = _hub_rows(name)
    missing = [i for i in item_ids if i not in rows]
    if missing:
        raise FlipscopeError(f"{name}: item ids {missing[:3]} are not in the offline copy", fix="pass the task's ids")
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"fs_{name}.jsonl"
    lines = "".join(json.dumps(rows[i]) + "\n" for i in item_ids)
    write_atomically(data, lambda tmp: tmp.write_text(lines))
    other = "validation" if split == "test" else "test"
    config = (
        f"include: {Path(lm_eval.__file__).parent / 'tasks' / stock}\ntask: fs_{name}\n"
        f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    {split}: {data}\n"
        f"training_split: null\n{split}_split: {split}\n{other}_split: null\n"
    )
    write_atomically(folder / f"fs_{name}.yaml", lambda tmp: tmp.write_text(config))
    return f"fs_{name}"
