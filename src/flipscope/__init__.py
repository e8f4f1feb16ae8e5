"""flipscope: does the compressed model still behave like its baseline?

``import flipscope`` is light: torch and transformers load only when a model runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    from flipscope._compare import Comparison, compare
    from flipscope._kld import KLDResult, kld
    from flipscope._mtbench import MTBenchSettings
    from flipscope._mtbench_api import MTBenchResult, judge_run, mtbench
    from flipscope._prompt import prompt_tokens
    from flipscope._save import save_compressed
    from flipscope.report import load_run

__all__ = [
    "Comparison",
    "FlipscopeError",
    "KLDResult",
    "MTBenchResult",
    "MTBenchSettings",
    "compare",
    "judge_run",
    "kld",
    "load_run",
    "mtbench",
    "prompt_tokens",
    "save_compressed",
]


def __getattr__(name: str) -> Any:
    if name in ("compare", "Comparison"):
        from flipscope import _compare

        return getattr(_compare, name)
    if name in ("kld", "KLDResult"):
        from flipscope import _kld

        return getattr(_kld, name)
    if name in ("mtbench", "judge_run", "MTBenchResult"):
        from flipscope import _mtbench_api

        return getattr(_mtbench_api, name)
    if name == "MTBenchSettings":
        from flipscope._mtbench import MTBenchSettings

        return MTBenchSettings
    if name == "prompt_tokens":
        from flipscope._prompt import prompt_tokens

        return prompt_tokens
    if name == "save_compressed":
        from flipscope._save import save_compressed

        return save_compressed
    if name == "load_run":
        from flipscope.report import load_run

        return load_run
    raise AttributeError(f"module 'flipscope' has no attribute {name!r}")
