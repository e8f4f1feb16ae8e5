"""The collapse warning judges the top option's share against the number of options and the targets' own
distribution (``metrics.summary.collapse_warnings``), and suggests ``--format cloze`` only where it applies."""

from __future__ import annotations

from flipscope.metrics import ItemScore, Pair, summarize, summarize_run
from flipscope.metrics.summary import collapse_warnings, expected_share


def _pairs(picks: list[int], targets: list[int], k: int, task: str = "t") -> list[Pair]:
    """Baseline and candidate both pick ``picks[i]`` among ``k`` options; the answer is ``targets[i]``."""

    def score(i: int, pick: int, target: int) -> ItemScore:
        return ItemScore(task, str(i), "", target, tuple(-0.5 if o == pick else -2.0 for o in range(k)))

    return [Pair(score(i, p, t), score(i, p, t)) for i, (p, t) in enumerate(zip(picks, targets, strict=True))]


def _spread(n: int, share: float, option: int, other: int) -> list[int]:
    """``n`` values, the first round(share · n) ``option``, the rest ``other``."""
    k = round(share * n)
    return [option] * k + [other] * (n - k)


def test_boolq_answered_no_where_the_answer_is_mostly_yes_is_a_collapse() -> None:
    n = 100  # option 0 "no", 1 "yes"; targets: yes on 62%; the model says "no" on 95%
    targets = _spread(n, 0.62, 1, 0)
    picks = _spread(n, 0.95, 0, 1)
    assert expected_share(_pairs(picks, targets, 2), 0) == 0.5  # targets 38% < chance 50%
    warnings = collapse_warnings(_pairs(picks, targets, 2))
    assert len(warnings) == 2 and all("95%" in w and "38% of targets" in w for w in warnings)
    assert {w.split()[0] for w in warnings} == {"baseline", "candidate"}
    assert not any("cloze" in w for w in warnings)  # BoolQ takes no --format: nothing suggested


def test_piqa_at_60_percent_a_with_balanced_targets_is_not() -> None:
    n = 100
    targets = [i % 2 for i in range(n)]
    picks = _spread(n, 0.60, 0, 1)
    assert collapse_warnings(_pairs(picks, targets, 2)) == []
    assert collapse_warnings(_pairs(_spread(n, 0.75, 0, 1), targets, 2))  # the bar: halfway from 50% to all


def test_the_bar_rises_with_the_targets_skew_and_falls_with_more_options() -> None:
    n = 100
    skewed = _spread(n, 0.80, 0, 1)  # 80% of answers are A: e = 80%, bar 90%
    assert collapse_warnings(_pairs(_spread(n, 0.85, 0, 1), skewed, 2)) == []
    assert collapse_warnings(_pairs(_spread(n, 0.92, 0, 1), skewed, 2))
    balanced4 = [i % 4 for i in range(n)]  # e = 25%: bar 62.5%
    assert collapse_warnings(_pairs(_spread(n, 0.60, 0, 1), balanced4, 4)) == []
    assert collapse_warnings(_pairs(_spread(n, 0.65, 0, 1), balanced4, 4))


def test_too_few_items_or_one_option_never_warn() -> None:
    assert collapse_warnings(_pairs([0] * 19, [1] * 19, 2)) == []
    assert collapse_warnings(_pairs([0] * 30, [0] * 30, 1)) == []


def test_cloze_hint_only_for_the_tasks_named() -> None:
    n = 40
    targets = [i % 4 for i in range(n)]
    mmlu = _pairs([0] * n, targets, 4, task="mmlu")
    arc = _pairs([0] * n, targets, 4, task="arc_easy")
    assert all("--format cloze" in w for w in summarize(mmlu, cloze_hint=True).warnings if "collapse" in w)
    base = [p.baseline for p in mmlu + arc]
    cand = [p.candidate for p in mmlu + arc]
    out = summarize_run(base, cand, ["mmlu", "arc_easy"], cloze_hint={"mmlu"})
    assert any("--format cloze" in w for w in out["mmlu"].warnings)
    assert any("collapse" in w for w in out["arc_easy"].warnings)
    assert not any("cloze" in w for w in out["arc_easy"].warnings + out["all"].warnings)
    assert not any("cloze" in w for w in summarize_run(base, cand, ["mmlu"])["mmlu"].warnings)  # default: none


def test_compare_suggests_cloze_only_for_a_task_run_in_letter_format(scripts, tmp_path) -> None:
    """Through ``compare``: a user file scored in --format letter whose candidate answers "A" everywhere gets the
    hint; the same file in cloze format gets the collapse warning without it."""
    import json

    from flipscope import compare
    from tests.conftest import Script

    rows = [{"id": f"q{i}", "question": f"Q{i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4} for i in range(40)]
    path = tmp_path / "quiz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def right(i: int, request) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
        n = len(request.continuations)
        pick = int(request.prompt.split("Q")[-1].split("?")[0]) % 4 if n == 4 else 0
        return tuple(-1.0 if o == pick else -3.0 for o in range(n))

    scripts["base"] = Script(right)
    scripts["cand"] = Script(lambda i, request: (-1.0,) + (-3.0,) * (len(request.continuations) - 1))
    for fmt, hinted in (("letter", True), ("cloze", False)):
        result = compare("mock:base", ["mock:cand"], tasks=[str(path)], format=fmt, out=tmp_path / fmt,
                         cache_dir=tmp_path / "cache")  # fmt: skip
        warnings = [w for w in result.summary["mock:cand"]["quiz"].warnings if "collapse" in w]
        assert warnings, fmt
        assert any("--format cloze" in w for w in warnings) is hinted, (fmt, warnings)
