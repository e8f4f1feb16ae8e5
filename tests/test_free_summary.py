"""Free-form summaries on hand-made records: every judge-free distance is over one item set, the items where each
quantity reported is measured ("measured m of n"), in run.json and in the table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import mean, median

import pytest
from rich.console import Console

from flipscope.metrics import FreeAnswer, ItemScore, Pair, summarize_run
from flipscope.metrics.summary import free_summary
from flipscope.report.table import print_run
from flipscope.store import ModelEntry, RunFile, Settings, TaskEntry

# per item: (baseline text, candidate text, baseline ref log-prob, candidate ref log-prob, candidate token KL)
# item 1: no KL (the candidate could not be compared token by token); item 2: no ΔNLL (the candidate's log-prob of
# the baseline's answer is missing); item 3: the baseline's answer is empty, so nothing is teacher-forced.
ITEMS = [
    (" The answer is 4.", " The answer is 4.", -3.0, -3.5, 0.10),
    (" Work. The answer is 6.", " Work. The answer is 7.", -5.0, -9.0, None),
    (" It is 9.", " It is 8.", -2.0, None, 0.70),
    ("", " The answer is 2.", None, None, None),
    (" So 12.", " So 13.", -4.0, -4.4, 0.30),
    (" Hence 5.", " Hence 5.", -1.0, -1.2, 0.05),
]


def _free(text: str, lp: float | None, tokens: int | None) -> FreeAnswer:
    answer = text.rstrip(".").split()[-1] if text else "[invalid]"
    return FreeAnswer(text, answer, False, False, "stop", len(text), tuple(map(ord, text)), lp, tokens)


def records() -> tuple[list[ItemScore], list[ItemScore]]:
    base, cand = [], []
    for i, (bt, ct, blp, clp, kl) in enumerate(ITEMS):
        tokens = len(bt) if bt else None
        base.append(ItemScore("gsm8k", str(i), "", 0, (), free=_free(bt, blp, tokens)))
        cand.append(ItemScore("gsm8k", str(i), "", 0, (), token_kl=kl, free=_free(ct, clp, None)))
    return base, cand


def test_kl_and_delta_nll_are_averaged_over_the_same_items() -> None:
    base, cand = records()
    f = free_summary([Pair(b, c) for b, c in zip(base, cand, strict=True)])
    assert f is not None
    both = [(bt, ct, blp, clp, kl) for bt, ct, blp, clp, kl in ITEMS if kl is not None and clp is not None and blp]
    assert f.measured == len(both) == 3 and f.n == len(ITEMS)
    assert f.teacher_kl_mean == pytest.approx(mean(kl for *_, kl in both))
    assert f.delta_nll_mean == pytest.approx(mean((blp - clp) / len(bt) for bt, _, blp, clp, _ in both))
    assert f.identical == pytest.approx(mean(bt == ct for bt, ct, *_ in ITEMS))  # answer comparisons: all n
    pairs = [(bt, ct) for bt, ct, *_ in both if bt != ct]
    differ = [next(k for k, (x, y) in enumerate(zip(bt, ct, strict=False)) if x != y) for bt, ct in pairs]
    assert f.first_divergence_median == pytest.approx(median(differ))
    assert f.invalid_baseline == 1  # answer counts are over every item


def test_the_token_kl_column_of_a_free_form_task_survives_an_empty_baseline_answer(tmp_path: Path) -> None:
    base, cand = records()
    s = summarize_run(base, cand, ["gsm8k"])["gsm8k"]
    assert s.free is not None and s.n == len(ITEMS)
    assert s.token_kl_mean is not None and s.token_kl_mean == pytest.approx(s.free.teacher_kl_mean)
    assert s.token_kl_items == s.free.measured == 3
    assert any("measured on 3 of 6 items" in w for w in s.warnings)
    run = RunFile(
        created="2025-01-01T00:00:00+00:00", flipscope_version="test", versions={},
        settings=Settings(format="cloze", fewshot=0, limit=None, seed=0, topk=128, tail_samples=64, device="cpu",
                          dtype="float32"),
        baseline=ModelEntry(spec="mock:b", role="baseline", fingerprint="b"),
        candidates=[ModelEntry(spec="mock:c", role="candidate", fingerprint="c")],
        tasks=[TaskEntry(name="gsm8k")], summary={"mock:c": {"gsm8k": s}},
    )  # fmt: skip
    stored = json.loads(run.model_dump_json())["summary"]["mock:c"]["gsm8k"]["free"]
    assert (stored["measured"], stored["n"]) == (3, 6)
    console = Console(record=True, width=300)
    print_run(run, console)
    text = console.export_text()
    from flipscope.report.formatting import num

    row = next(line for line in text.splitlines() if "gsm8k" in line)
    assert row.rstrip(" │").endswith(num(s.token_kl_mean))  # the token KL column, not blank
    assert "teacher-forced, measured 3 of 6" in text and "answers, all 6: identical" in text


def test_a_quantity_measured_on_no_item_does_not_empty_the_others() -> None:
    """Imported logs hold no teacher-forced numbers: the answer comparisons still cover every item."""
    base, cand = records()
    strip = [
        (
            ItemScore(b.task, b.item_id, "", 0, (), free=_free(b.free.text, None, None)),  # type: ignore[union-attr]
            ItemScore(c.task, c.item_id, "", 0, (), free=_free(c.free.text, None, None)),  # type: ignore[union-attr]
        )
        for b, c in zip(base, cand, strict=True)
    ]
    f = free_summary([Pair(b, c) for b, c in strip])
    assert f is not None and f.teacher_kl_mean is None and f.delta_nll_mean is None
    assert f.measured == f.n == len(ITEMS) and f.identical == pytest.approx(2 / 6)
    nan = [Pair(b, ItemScore(c.task, c.item_id, "", 0, (), token_kl=math.nan, free=c.free)) for b, c in
           zip(base, cand, strict=True)]  # fmt: skip
    assert free_summary(nan).measured == 0  # type: ignore[union-attr]


def test_same_answer_and_all_flips_count_the_same_items_when_some_are_unmeasured() -> None:
    """Answer comparisons need no teacher-forced score: identical and same answer are over all n items, as all-flips
    is (one rule, ``metrics.same_answer``), while KL, ΔNLL and first divergence stay over the measured m."""
    base, cand = records()
    s = summarize_run(base, cand, ["gsm8k"])["gsm8k"]
    f = s.free
    assert f is not None and f.measured < f.n == s.n == len(ITEMS)  # items 1-3 are unmeasured
    assert s.all_flips is not None and f.same_answer is not None
    assert 1 - f.same_answer == pytest.approx(s.all_flips)
    answers = [((bt.split() or ["[invalid]"])[-1], ct.split()[-1]) for bt, ct, *_ in ITEMS]
    assert f.same_answer == pytest.approx(mean(b == c for b, c in answers))
    assert f.identical == pytest.approx(mean(bt == ct for bt, ct, *_ in ITEMS))
