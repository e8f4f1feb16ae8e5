"""Few-shot exemplars that lm-evaluation-harness 0.4.13 keeps in Python rather than in its YAML: the literal list
a task's ``list_fewshot_samples()`` returns, read from lm-eval's wheel (``lm-eval==0.4.13``, MIT; fetched into the
cache with ``pip download --no-deps``, never installed) and parsed as data — never imported or run."""

from __future__ import annotations

import ast
from typing import Any

from flipscope.errors import FlipscopeError

LM_EVAL = ("lm-eval", "0.4.13")
_REFETCH = "delete the cached lm-eval wheel and its extracted files (flipscope cache) to fetch them again"


def literal_samples(member: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` dicts that ``list_fewshot_samples`` in the wheel's ``member`` returns, checked."""
    from flipscope.plumbing.wheels import extract_member

    path = extract_member(*LM_EVAL, member)
    source = f"lm-eval=={LM_EVAL[1]}: {member}"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        body = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "list_fewshot_samples")
        returned = next(s for s in body.body if isinstance(s, ast.Return))
        samples = ast.literal_eval(returned.value) if returned.value is not None else None
    except (SyntaxError, StopIteration, ValueError, OSError) as exc:
        raise FlipscopeError(f"{source}: no literal list_fewshot_samples ({exc})", fix=_REFETCH) from exc
    if not isinstance(samples, list) or len(samples) != count or not all(isinstance(s, dict) for s in samples):
        raise FlipscopeError(f"{source}: list_fewshot_samples does not return {count} exemplars", fix=_REFETCH)
    return samples
