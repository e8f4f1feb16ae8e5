"""One rule for a free-form answer with no final answer ("[invalid]"): all-flips and same-answer both read
``metrics.same_answer``, so two non-answers are one answer in both, never a flip in one and a disagreement in the
other; and ``--max-new-tokens`` below 1 is refused by the Python API and the CLI before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

import flipscope
from flipscope.errors import FlipscopeError
from flipscope.metrics import FreeAnswer, ItemScore, Pair, answer_distance, summarize_run
from flipscope.metrics.paired import flip_counts
from tests.conftest import Script
from tests.fake_olmo import write_wheel


def _wheel() -> None:
    """The offline GSM8K copy, faked: 1,319 problems behind 8 exemplars in the oe-eval layout."""
    shot = "Question: Two plus two?\nAnswer: 2 + 2 = 4. So the answer is 4.\n\n"
    rows = [{"doc": {"id": i, "question": f"Problem {i}?", "short_answer": str(i), "answer": f"#### {i}"},
             "request": {"context": shot * 8 + f"Question: Problem {i}?\nAnswer:"}} for i in range(1319)]  # fmt: skip
    write_wheel({}, {"gsm8k/gold_bpb_5shot": rows})


def _free(item: str, text: str, answer: str) -> ItemScore:
    return ItemScore("gsm8k", item, "", 0, (), free=FreeAnswer(text, answer, False, False, "stop", len(text)))


@pytest.mark.parametrize(
    ("base", "cand", "same"),
    [("18", "18", True), ("18", "19", False), ("[invalid]", "[invalid]", True), ("[invalid]", "18", False)],
)
def test_all_flips_and_same_answer_follow_one_rule(base: str, cand: str, same: bool) -> None:
    """Two "[invalid]" (neither model gave a final answer) are the same answer: no all-flip, and counted by
    same-answer; an answer against a non-answer is a change in both."""
    pair = Pair(_free("0", "one text", base), _free("0", "another text", cand))
    distance = answer_distance(pair)
    assert distance is not None and distance.same_answer is same
    assert flip_counts([pair]).changed == int(not same)
    summary = summarize_run([pair.baseline], [pair.candidate], ["gsm8k"])["gsm8k"]
    assert summary.free is not None and summary.all_flips is not None and summary.free.same_answer is not None
    assert summary.all_flips + summary.free.same_answer == 1.0


def test_two_empty_answers_are_not_an_all_flip(scripts: dict[str, Script], tmp_path: Path) -> None:
    """Both models answer nothing (as a zero-token budget would give): nothing changed between them."""
    _wheel()
    scripts["b"] = Script(lambda i, r: (-1.0,), answer=lambda prompt: "")
    scripts["c"] = Script(lambda i, r: (-1.0,), answer=lambda prompt: "Q: the next question")  # cut at "Q:": empty
    result = flipscope.compare("mock:b", ["mock:c"], tasks=["gsm8k"], limit=6, out=tmp_path / "run",
                               cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary["mock:c"]["gsm8k"]
    assert s.n == 6 and s.free is not None and (s.free.invalid_baseline, s.free.invalid_candidate) == (6, 6)
    assert s.all_flips == 0.0 and s.free.same_answer == 1.0 and s.flips == 0.0


def test_max_new_tokens_below_one_is_refused_by_the_api(tmp_path: Path) -> None:
    for bad in (0, -3):
        with pytest.raises(FlipscopeError, match=f"--max-new-tokens must be at least 1, got {bad}"):
            flipscope.compare("bundled:smollm2-135m", ["+rtn:w4"], tasks=["gsm8k"], max_new_tokens=bad,
                              out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_max_new_tokens_below_one_is_one_line_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.test_cli import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "compare", "bundled:smollm2-135m", "+rtn:w4", "--tasks", "gsm8k",
                             "--max-new-tokens", "0", "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 2 and "--max-new-tokens must be at least 1, got 0" in err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1 and " — " in err
    assert not (tmp_path / "run").exists()
