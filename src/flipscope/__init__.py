"""flipscope: does the compressed model still behave like its baseline?

``import flipscope`` is light: torch and transformers load only when a model runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flipscope.errors import FlipscopeError

if TYPE_CHECKING:
    from flipscope.metrics.sequential import SequentialPlan
    from flipscope.report import load_run
    from flipscope.runs.compare import CompareSettings, Comparison, compare
    from flipscope.runs.kld import KLDResult, KldSettings, kld
    from flipscope.runs.mtbench import MTBenchResult, judge_run, mtbench
    from flipscope.runs.mtbench_session import MTBenchSettings
    from flipscope.runs.prompt import prompt_tokens
    from flipscope.runs.save import SavedGGUF, save_compressed, save_gguf
    from flipscope.runs.screen import ScreenResult, ScreenSettings, screen
    from flipscope.runs.shards import Shard

__all__ = [
    "CompareSettings",
    "Comparison",
    "FlipscopeError",
    "KLDResult",
    "KldSettings",
    "MTBenchResult",
    "MTBenchSettings",
    "SavedGGUF",
    "ScreenResult",
    "ScreenSettings",
    "SequentialPlan",
    "Shard",
    "compare",
    "judge_run",
    "kld",
    "load_run",
    "mtbench",
    "prompt_tokens",
    "save_compressed",
    "save_gguf",
    "screen",
]


def __getattr__(name: str) -> Any:
    if name in ("compare", "Comparison", "CompareSettings"):
        from flipscope.runs import compare as compare_run

        return getattr(compare_run, name)
    if name in ("kld", "KLDResult", "KldSettings"):
        from flipscope.runs import kld as kld_run

        return getattr(kld_run, name)
    if name in ("mtbench", "judge_run", "MTBenchResult"):
        from flipscope.runs import mtbench as mtbench_run

        return getattr(mtbench_run, name)
    if name == "MTBenchSettings":
        from flipscope.runs.mtbench_session import MTBenchSettings

        return MTBenchSettings
    if name == "prompt_tokens":
        from flipscope.runs.prompt import prompt_tokens

        return prompt_tokens
    if name in ("save_compressed", "save_gguf", "SavedGGUF"):
        from flipscope.runs import save

        return getattr(save, name)
    if name in ("screen", "ScreenSettings", "ScreenResult"):
        from flipscope.runs import screen as screen_run

        return getattr(screen_run, name)
    if name == "SequentialPlan":
        from flipscope.metrics.sequential import SequentialPlan

        return SequentialPlan
    if name == "Shard":
        from flipscope.runs.shards import Shard

        return Shard
    if name == "load_run":
        from flipscope.report import load_run

        return load_run
    raise AttributeError(f"module 'flipscope' has no attribute {name!r}")
