"""`report --html/--md` merges runs only where their baselines are the same model run the same way: the baseline's
spec, weights fingerprint, dtype, device, prompt format and few-shot count (run directories built from hand-made
records, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from flipscope.cli import cli
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, summarize_run
from flipscope.report.collect import collect
from flipscope.store import ModelEntry, RunFile, Settings, TaskEntry, records_frame, write_run

BASE = "bundled:smollm2-135m"
CAND = f"{BASE}+rtn:w4g64"


def _scores(shift: int) -> list[ItemScore]:
    return [ItemScore("planets", f"q{i}", "", i % 4, tuple(-1.0 - ((o + shift) % 4) for o in range(4)))
            for i in range(8)]  # fmt: skip


def write_compare(
    folder: Path, *, fingerprint: str = "fp-smollm2", meta: dict[str, object] | None = None, **settings: object
) -> Path:
    """A compare run directory: BASE against one candidate on 8 hand-made items, with these baseline settings
    (``meta``: what the task records of itself, e.g. a free-form task's own few-shot count)."""
    import pandas as pd

    base, cand = _scores(0), _scores(1)
    fields = {"format": "cloze", "fewshot": 0, "limit": None, "seed": 0, "topk": 128, "tail_samples": 64,
              "device": "cpu", "dtype": "float32"} | settings  # fmt: skip
    run = RunFile(
        created="2025-01-01T00:00:00+00:00",
        flipscope_version="test",
        versions={},
        settings=Settings.model_validate(fields),
        baseline=ModelEntry(spec=BASE, role="baseline", fingerprint=fingerprint),
        candidates=[ModelEntry(spec=CAND, role="candidate", fingerprint="fp-w4")],
        tasks=[TaskEntry(name="planets", meta=meta or {})],
        summary={CAND: summarize_run(base, cand, ["planets"])},
    )
    items = pd.DataFrame([{"task": "planets", "item_id": s.item_id} for s in base])
    write_run(folder, run, records_frame({BASE: ("baseline", base), CAND: ("candidate", cand)}), items)
    return folder


def test_runs_of_one_baseline_run_the_same_way_merge(tmp_path: Path) -> None:
    a = write_compare(tmp_path / "a")
    b = write_compare(tmp_path / "b", seed=3, topk=32)  # settings of the candidates' measurement, not the baseline's
    data = collect([a, b])
    assert data.baseline == BASE and [r.folder for r in data.compares] == [a, b]


@pytest.mark.parametrize(
    ("changed", "field", "values"),
    [
        ({"dtype": "bfloat16"}, "dtype", ("float32", "bfloat16")),
        ({"device": "cuda"}, "device", ("cpu", "cuda")),
        ({"format": "letter"}, "format", ("cloze", "letter")),
        ({"fewshot": 5}, "few-shot", ("0", "5")),
        ({"fingerprint": "fp-other-weights"}, "weights fingerprint", ("fp-smollm2", "fp-other-weights")),
    ],
)
def test_one_label_run_differently_is_refused_naming_the_runs_field_and_values(
    tmp_path: Path, changed: dict[str, object], field: str, values: tuple[str, str]
) -> None:
    a = write_compare(tmp_path / "a")
    b = write_compare(tmp_path / "b", **changed)  # type: ignore[arg-type]
    with pytest.raises(FlipscopeError) as caught:
        collect([a, b])
    message = str(caught.value)
    assert "\n" not in message and "different baselines" in message
    assert str(a) in message and str(b) in message
    assert f"{field} {values[0]} ({a.name}) vs {values[1]} ({b.name})" in message
    shown = CliRunner().invoke(cli, ["report", str(a), str(b), "--md", str(tmp_path / "r.md")])
    assert isinstance(shown.exception, FlipscopeError) and str(shown.exception) == message  # `main` prints one line
    assert not (tmp_path / "r.md").exists()


def test_settings_a_run_did_not_record_are_not_compared(tmp_path: Path) -> None:
    """An imported lm-eval run knows neither dtype nor few-shot of the model it logged ("unknown", -1)."""
    a = write_compare(tmp_path / "a")
    b = write_compare(tmp_path / "b", dtype="unknown", device="unknown", fewshot=-1)
    assert len(collect([a, b]).compares) == 2


def test_runs_whose_tasks_record_their_own_few_shot_compare_those_not_the_global_field(tmp_path: Path) -> None:
    """gsm8k at its default records settings.fewshot 0 and its own 8; with --fewshot 8 it records 8 and 8: the same
    prompts, so the two merge. Each task's own count is what is compared: 8 against 5 is refused."""
    a = write_compare(tmp_path / "a", fewshot=0, meta={"fewshot": 8})
    b = write_compare(tmp_path / "b", fewshot=8, meta={"fewshot": 8})
    assert len(collect([a, b]).compares) == 2
    c = write_compare(tmp_path / "c", fewshot=5, meta={"fewshot": 5})
    with pytest.raises(FlipscopeError, match=r"planets few-shot 8 \(a\) vs 5 \(c\)"):
        collect([a, c])
