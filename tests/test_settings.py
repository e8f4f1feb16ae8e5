"""Settings objects of the run functions: ``compare(b, c, settings)`` and ``compare(b, c, limit=…)`` are one run;
a keyword that is no setting is a one-line error; the CLI hands the library a settings object."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import flipscope
from flipscope import CompareSettings, FlipscopeError, KldSettings
from flipscope.cli import main
from flipscope.runs.noise import NoiseFloor
from flipscope.runs.overrides import with_overrides


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["flipscope", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_keywords_are_put_in_the_settings() -> None:
    keywords = {"tasks": ["arc_easy"], "limit": 5, "noise_floor": NoiseFloor(1), "use_cache": False}
    assert with_overrides(CompareSettings(), keywords, command="compare") == CompareSettings(**keywords)
    base = CompareSettings(limit=5, seed=3)
    assert with_overrides(base, {"seed": 4}, command="compare") == CompareSettings(limit=5, seed=4)
    assert with_overrides(base, {}, command="compare") is base
    keywords = {"corpus": "text.txt", "ctx": 64, "max_windows": 3, "store": "live", "cache_dir": Path("c")}
    assert with_overrides(KldSettings(), keywords, command="kld") == KldSettings(**keywords)


def test_settings_form_and_keyword_form_are_one_run(scripts: Any, mc_file: Path, tmp_path: Path) -> None:
    from tests.conftest import Script

    scripts["b"] = Script(lambda i, r: (-1.0, -2.0, -3.0, -4.0))
    scripts["c"] = Script(lambda i, r: (-2.0, -1.0, -3.0, -4.0) if i % 3 == 0 else (-1.0, -2.0, -3.0, -4.0))
    settings = CompareSettings(tasks=[str(mc_file)], limit=8, topk=4, cache_dir=tmp_path / "cache")
    by_settings = flipscope.compare("mock:b", ["mock:c"], settings, out=tmp_path / "a")
    by_keywords = flipscope.compare("mock:b", ["mock:c"], tasks=[str(mc_file)], limit=8, topk=4,
                                    cache_dir=tmp_path / "cache", out=tmp_path / "b")  # fmt: skip
    assert by_settings.out == tmp_path / "a" and by_keywords.out == tmp_path / "b"
    assert by_settings.run.settings == by_keywords.run.settings
    assert by_settings.summary == by_keywords.summary


def test_unknown_keyword_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FlipscopeError) as caught:
        flipscope.compare("mock:b", ["mock:c"], batch=4, out=tmp_path / "run")
    message = str(caught.value)
    assert "compare has no setting 'batch'" in message and "batch_size" in message and "tasks" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(FlipscopeError, match=r"^kld has no setting 'chunks', 'limit' — use one of corpus, ctx, "):
        flipscope.kld("mock:b", ["mock:c"], KldSettings(ctx=64), chunks=3, limit=2)


def test_cli_passes_a_settings_object(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import flipscope.runs.compare

    given: dict[str, Any] = {}

    def fake(baseline: str, candidates: list[str], settings: Any = None, **keywords: Any) -> Any:
        given.update(baseline=baseline, candidates=candidates, settings=settings, keywords=keywords)
        raise FlipscopeError("stopped here")

    monkeypatch.setattr(flipscope.runs.compare, "compare", fake)
    code, err = run_cli(monkeypatch, capsys, "compare", "mock:b", "mock:c", "--tasks", "arc_easy,mmlu", "--limit",
                        "7", "--batch-size", "2", "--noise-floor", "--no-cache", "--out", "somewhere")  # fmt: skip
    assert code == 2 and "stopped here" in err
    assert given["baseline"] == "mock:b" and given["candidates"] == ["mock:c"]
    assert list(given["keywords"]) == ["display"]
    assert given["settings"] == CompareSettings(tasks=["arc_easy", "mmlu"], limit=7, batch_size=2, out="somewhere",
                                                noise_floor=NoiseFloor(1), use_cache=False, format="cloze")  # fmt: skip


def test_kld_cli_passes_a_settings_object(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import flipscope.runs.kld

    given: dict[str, Any] = {}

    def fake(baseline: str, candidates: list[str], settings: Any = None, **keywords: Any) -> Any:
        given.update(settings=settings, keywords=keywords)
        raise FlipscopeError("stopped here")

    monkeypatch.setattr(flipscope.runs.kld, "kld", fake)
    code, err = run_cli(monkeypatch, capsys, "kld", "mock:b", "mock:c", "--corpus", "text.txt", "--chunks", "3",
                        "--store", "full", "--full-code", "float16", "--no-cache")  # fmt: skip
    assert code == 2 and "stopped here" in err and list(given["keywords"]) == ["display"]
    assert given["settings"] == KldSettings(corpus="text.txt", max_windows=3, store="full", full_code="float16",
                                            use_cache=False)  # fmt: skip


def test_another_runs_settings_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        FlipscopeError, match=r"^compare takes a CompareSettings as its settings, not a KldSettings — "
    ) as caught:
        flipscope.compare("mock:b", ["mock:c"], KldSettings(), out=tmp_path / "run")  # type: ignore[arg-type]
    assert len(str(caught.value).splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(FlipscopeError, match=r"^kld takes a KldSettings as its settings, not a CompareSettings — "):
        flipscope.kld("mock:b", ["mock:c"], CompareSettings(), ctx=64)  # type: ignore[arg-type]
