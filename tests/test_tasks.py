"""Task loading: the offline MMLU format, stratified sampling, user files, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flipscope.errors import FlipscopeError
from flipscope.tasks import MCItem, PromptFormat, build_request, load_task
from flipscope.tasks._sampling import allocate, stratified_sample
from flipscope.tasks.mmlu import parse_offline

HEADER = json.dumps(
    {
        "question": "question",
        "answer_a": "answer_a",
        "answer_b": "answer_b",
        "answer_c": "answer_c",
        "answer_d": "answer_d",
        "correct_answer": "answer",
        "topic": "x",
    }
)


def mmlu_line(q: str, topic: str, answer: str = "B") -> str:
    return json.dumps(
        {
            "question": q,
            "answer_a": "a",
            "answer_b": "b",
            "answer_c": "c",
            "answer_d": "d",
            "correct_answer": answer,
            "topic": topic,
        }
    )


def test_offline_mmlu_parse_skips_and_counts_header_rows() -> None:
    lines = [
        mmlu_line("q1", "high school physics"),
        HEADER,
        mmlu_line("q2", "high school physics", "D"),
        mmlu_line("q3", "anatomy", "A"),
        HEADER,
    ]
    by_subject, headers = parse_offline(lines, "mmlu.jsonl")
    assert headers == 2
    assert [i.item_id for i in by_subject["high_school_physics"]] == [
        "high_school_physics/0",
        "high_school_physics/1",
    ]
    assert by_subject["high_school_physics"][1].answer == 3
    assert by_subject["anatomy"][0].choices == ("a", "b", "c", "d")


def test_offline_mmlu_malformed_row_names_its_line() -> None:
    lines = [mmlu_line("q1", "anatomy"), mmlu_line("q2", "anatomy", "Z")]
    with pytest.raises(FlipscopeError, match="line 2"):
        parse_offline(lines, "mmlu.jsonl")


def test_allocate_is_proportional_and_exact() -> None:
    counts = allocate({"a": 100, "b": 50, "c": 10}, 16)
    assert sum(counts.values()) == 16
    assert counts == {"a": 10, "b": 5, "c": 1}


def test_stratified_sample_is_deterministic_and_covers_subjects() -> None:
    items = [MCItem(f"{s}/{i}", "q", ("a", "b"), 0, s) for s in ("x", "y", "z") for i in range(30)]
    one = stratified_sample(items, 12, seed=3)
    assert one == stratified_sample(items, 12, seed=3)
    assert one != stratified_sample(items, 12, seed=4)
    assert {i.subject for i in one} == {"x", "y", "z"} and len(one) == 12
    assert stratified_sample(items, 1000, seed=0) == items


def test_prompt_formats_share_prefix_per_subject() -> None:
    shots = [MCItem("s/0", "Shot?", ("yes", "no"), 1, "s")]
    item = MCItem("s/1", "Really?", ("yes", "no"), 0, "s")
    letter = build_request(item, PromptFormat.LETTER, shots)
    assert letter.continuations == (" A", " B")
    assert letter.prompt == "Really?\nA. yes\nB. no\nAnswer:"
    assert letter.prefix.endswith("Shot?\nA. yes\nB. no\nAnswer: B\n\n")
    cloze = build_request(item, PromptFormat.CLOZE, shots)
    assert cloze.continuations == (" yes", " no")
    assert cloze.prefix.endswith("Question: Shot?\nAnswer: no\n\n")
    other = build_request(MCItem("s/2", "Else?", ("a", "b"), 0, "s"), PromptFormat.CLOZE, shots)
    assert other.prefix == cloze.prefix


def test_user_files_in_three_formats(tmp_path: Path, mc_file: Path) -> None:
    task = load_task(str(mc_file))
    assert len(task.items) == 12 and task.items[0].choices == ("Mercury", "Venus", "Earth", "Mars")
    frame = pd.DataFrame(
        [
            {"question": "Q?", "A": "x", "B": "y", "C": "z", "answer": "C"},
            {"question": "R?", "A": "x", "B": "y", "C": "z", "answer": 0},
        ]
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    csv_task = load_task(str(tmp_path / "t.csv"))
    assert [i.answer for i in csv_task.items] == [2, 0]
    pq = pd.DataFrame([{"question": "Q?", "choices": ["p", "q"], "answer": 1}])
    pq.to_parquet(tmp_path / "t.parquet")
    assert load_task(str(tmp_path / "t.parquet")).items[0].answer == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"question": "Q", "choices": ["a", "b"], "answer": 0}\n{"question": "R", "choices": ["a"], "answer": 0}',
            "line 2: malformed row",
        ),
        (
            '{"question": "Q", "choices": ["a", "b"], "answer": 0}\n\n'
            '{"question": "R", "choices": ["a", "b"], "answer": 5}',
            "line 3: malformed row",
        ),
        ('{"question": "Q", "choices": ["a", "b"]}', "line 1: malformed row .*missing answer"),
        ('{"question": "Q", "choices": ["a", "b"], "answer": 0}\n{not json', "line 2: not valid JSON"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(FlipscopeError, match=message):
        load_task(str(path))


def test_task_errors() -> None:
    with pytest.raises(FlipscopeError, match="unknown task 'nosuch'"):
        load_task("nosuch")
    with pytest.raises(FlipscopeError, match="does not exist"):
        load_task("missing.jsonl")
    with pytest.raises(FlipscopeError, match="--limit must be at least 1"):
        load_task("mmlu", limit=0)


def test_task_lists_keep_subject_lists_together() -> None:
    from flipscope.tasks import split_tasks

    assert split_tasks("mmlu") == ["mmlu"]
    assert split_tasks("mmlu:anatomy,astronomy") == ["mmlu:anatomy,astronomy"]
    assert split_tasks("mmlu:anatomy, astronomy ,my.jsonl,mmlu") == ["mmlu:anatomy,astronomy", "my.jsonl", "mmlu"]
    assert split_tasks("a.csv,mmlu:virology,hf:cais/mmlu:anatomy,astronomy") == [
        "a.csv",
        "mmlu:virology",
        "hf:cais/mmlu:anatomy,astronomy",
    ]
    assert split_tasks("") == [] and split_tasks(",,") == []


def test_hub_mmlu_is_asked_for_by_name_and_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FlipscopeError, match="hf:cais/mmlu asks for the hub") as info:
        load_task("hf:cais/mmlu:anatomy")
    assert "--tasks mmlu" in str(info.value.fix)
