"""`flipscope import lm-eval` on logs written by real lm-evaluation-harness 0.4.13 (`--model hf`, offline, local JSON
tasks) for the tiny Llama and a quantized copy saved with `flipscope compress`: accuracy equals lm-eval's own
results file, flips equal an independent count over the two sample files, a generative task imports as
correct/incorrect, the same items scored natively in the matching prompt format give the same correctness, and
mismatched runs are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from flipscope.cli import cli
from flipscope.errors import FlipscopeError

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is part of the dev extra")

N_MC, N_GEN = 40, 12
WORDS = ["apple", "river", "stone", "cloud", "bread", "green", "quiet", "storm", "light", "sugar", "honey", "metal"]


def _mc_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(N_MC):
        choices = [WORDS[(i + k) % 12] for k in range(4)]
        question = f"Which word follows {WORDS[i % 12]} number {i}?"
        rows.append(
            {
                "id": str(i),
                "question": question,
                "subject": "abstract_algebra",
                "choices": choices,
                "answer": (i * 7) % 4,
            }
        )
    return rows


#: ARC-style options of very different lengths (1 to 17 characters): lm-eval's acc_norm divides by len(choice), so
#: counting the target delimiter (" " + choice) changes the winner where the per-character scores are close.
PHRASES = ["a", "ox", "sun", "tree", "apple", "a cloud", "river", "quiet storm", "bread", "green stone river", "it",
           "honey and sugar"]  # fmt: skip


def _arc_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(N_MC):
        texts = [PHRASES[(i * 5 + k * 7) % len(PHRASES)] for k in range(4)]
        choices = {"text": texts, "label": ["A", "B", "C", "D"]}
        question = f"What goes with {WORDS[i % 12]} number {i}?"
        rows.append({"id": str(i), "question": question, "choices": choices, "answerKey": "ABCD"[(i * 3) % 4]})
    return rows


def _write_tasks(folder: Path, gen_answers: list[str]) -> None:
    """lm-eval's own MMLU and ARC-Easy templates (its stock yamls, included) on local files, and a small generative
    task."""
    stock = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    arc = folder / "arc.jsonl"
    arc.write_text("".join(json.dumps(r) + "\n" for r in _arc_rows()))
    (folder / "fs_arc_local.yaml").write_text(
        f"include: {Path(lm_eval.__file__).parent / 'tasks' / 'arc' / 'arc_easy.yaml'}\ntask: fs_arc_local\n"
        f"tag: []\ndataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    train: {arc}\n"
        f"    validation: {arc}\n    test: {arc}\n"
    )
    mc = folder / "mc.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in _mc_rows()))
    (folder / "fs_mmlu_local.yaml").write_text(
        f"include: {stock}\ntask: fs_mmlu_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {mc}\n    dev: {mc}\n"
        'description: "The following are multiple choice questions (with answers) about abstract algebra.\\n\\n"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    gen = folder / "gen.jsonl"
    gen.write_text("".join(json.dumps({"question": f"Say {WORDS[i]} {i}", "answer": a}) + "\n"
                           for i, a in enumerate(gen_answers)))  # fmt: skip
    (folder / "fs_gen_local.yaml").write_text(
        f"task: fs_gen_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {gen}\n"
        'test_split: test\noutput_type: generate_until\ndoc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{answer}}"\ngeneration_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 4\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )


def _run_lm_eval(model: Path, include: Path, out: Path, tasks: str) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(out.parent / "datasets-cache")}  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
         "--tasks", tasks, "--include_path", str(include), "--num_fewshot", "0", "--batch_size", "4",
         "--device", "cpu", "--output_path", str(out), "--log_samples"],
        check=True, env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    (results,) = list(out.rglob("results_*.json"))
    data: dict[str, Any] = json.loads(results.read_text())
    return data


def _samples(out: Path, task: str) -> dict[int, dict[str, Any]]:
    (path,) = list(out.rglob(f"samples_{task}_*.jsonl"))
    return {row["doc_id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def lm_eval_runs(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three lm-eval runs: a probe of the baseline's generations (whose texts become the generative task's answers
    on even items, so that some are right), then baseline and candidate on both tasks."""
    import shutil

    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("lm-eval")
    baseline = root / "tiny"
    shutil.copytree(tiny_llama, baseline)
    tokenizer = AutoTokenizer.from_pretrained(baseline)
    tokenizer.eos_token = "<s>"  # lm-eval's generation needs an end-of-text token
    tokenizer.save_pretrained(baseline)
    candidate = root / "w3"
    assert CliRunner().invoke(cli, ["compress", f"hf:{baseline}+rtn:w2g16", "--out", str(candidate)]).exit_code == 0
    (root / "probe-tasks").mkdir()
    _write_tasks(root / "probe-tasks", ["?"] * N_GEN)
    _run_lm_eval(baseline, root / "probe-tasks", root / "probe", "fs_gen_local")
    said = _samples(root / "probe", "fs_gen_local")
    answers = [said[i]["filtered_resps"][0] if i % 2 == 0 else "never said" for i in range(N_GEN)]
    (root / "tasks").mkdir()
    _write_tasks(root / "tasks", answers)
    results = {name: _run_lm_eval(model, root / "tasks", root / name,
                                      "fs_mmlu_local,fs_arc_local,fs_gen_local")
               for name, model in (("base", baseline), ("cand", candidate))}  # fmt: skip
    return {"root": root, "results": results, "candidate": candidate, "tiny": baseline}


def _independent_flips(root: Path, task: str, metric: str) -> tuple[int, int]:
    base, cand = _samples(root / "base", task), _samples(root / "cand", task)
    filt = {i: r for i, r in base.items()}
    c2i = sum(1 for i in filt if base[i][metric] == 1 and cand[i][metric] == 0)
    i2c = sum(1 for i in filt if base[i][metric] == 0 and cand[i][metric] == 1)
    return c2i, i2c


def test_import_matches_lm_eval_accuracy_and_an_independent_flip_count(lm_eval_runs: dict[str, Any]) -> None:
    from flipscope.report import load_run
    from flipscope.runs.lm_eval_import import import_lm_eval

    root = lm_eval_runs["root"]
    run, folder = import_lm_eval(root / "base", [root / "cand"], out=root / "imported")
    cand = run.candidates[0].spec
    for task, metric in (("fs_mmlu_local", "acc"), ("fs_gen_local", "exact_match")):
        s = run.summary[cand][task]
        ours = lm_eval_runs["results"]
        assert s.acc_baseline == pytest.approx(ours["base"]["results"][task][f"{metric},none"])
        assert s.acc_candidate == pytest.approx(ours["cand"]["results"][task][f"{metric},none"])
        assert (s.flips_c2i, s.flips_i2c) == _independent_flips(root, task, metric)
    mc, gen = run.summary[cand]["fs_mmlu_local"], run.summary[cand]["fs_gen_local"]
    assert mc.n == N_MC and mc.choice_kl_mean is not None and mc.choice_kl_mean > 0 and mc.flips_c2i + mc.flips_i2c > 0
    assert mc.acc_norm_baseline == pytest.approx(lm_eval_runs["results"]["base"]["results"]["fs_mmlu_local"]
                                                 ["acc_norm,none"])  # fmt: skip
    assert gen.n == N_GEN and gen.choice_kl_mean is None and 0 < gen.acc_baseline < 1  # type: ignore[operator]
    assert load_run(folder).summary == run.summary  # a normal run directory: report recomputes the same
    shown = CliRunner().invoke(cli, ["report", str(folder), "--html", str(root / "imported.html")])
    assert shown.exit_code == 0, shown.output


def test_native_scoring_in_the_letter_format_matches_lm_eval_item_by_item(lm_eval_runs: dict[str, Any]) -> None:
    """lm-eval's `mmlu` template is flipscope's `--format letter`: the same items, the same correctness."""
    import flipscope
    from flipscope.runs.lm_eval_import import import_lm_eval

    root = lm_eval_runs["root"]
    native = flipscope.compare(f"hf:{lm_eval_runs['tiny']}", [f"hf:{lm_eval_runs['candidate']}"],
                               tasks=[str(root / "tasks" / "mc.jsonl")], format="letter", device="cpu",
                               out=root / "native", cache_dir=root / "cache")  # fmt: skip
    run, _ = import_lm_eval(root / "base", [root / "cand"], tasks=["fs_mmlu_local"], out=root / "imported-mc")
    ours = {(s.item_id, role): s.correct for role, label in (("b", f"hf:{lm_eval_runs['tiny']}"),
                                                             ("c", f"hf:{lm_eval_runs['candidate']}"))
            for s in native.scores[label]}  # fmt: skip
    for role, folder in (("b", "base"), ("c", "cand")):
        theirs = _samples(root / folder, "fs_mmlu_local")
        for doc_id, row in theirs.items():
            assert ours[(str(doc_id), role)] == bool(row["acc"]), (role, doc_id)
    assert run.summary[run.candidates[0].spec]["fs_mmlu_local"].flips == pytest.approx(
        native.summary[f"hf:{lm_eval_runs['candidate']}"]["mc"].flips
    )


def _norm_pick(row: dict[str, Any], lengths: list[int]) -> int:
    """The option lm-eval's acc_norm rule picks from a logged row, dividing by ``lengths``."""
    logliks = np.array([float(pair[0]) for pair in row["filtered_resps"]])
    return int(np.argmax(logliks / np.array(lengths, dtype=np.float64)))


def test_imported_acc_norm_is_lm_evals_item_by_item_on_options_of_different_lengths(
    lm_eval_runs: dict[str, Any],
) -> None:
    """ARC-Easy's template on options of 1 to 17 characters through real lm-eval: the import stores lm-eval's
    option lengths (``len(choice)``, not the logged continuation ``" " + choice``) and every item's acc_norm is the
    one lm-eval logged; the data is one where counting the delimiter picks another option on some items."""
    from flipscope.report import load_run_scores
    from flipscope.runs.lm_eval_import import import_lm_eval

    root = lm_eval_runs["root"]
    run, folder = import_lm_eval(root / "base", [root / "cand"], tasks=["fs_arc_local"], out=root / "imported-arc")
    _, scores = load_run_scores(folder)
    summary = run.summary[run.candidates[0].spec]["fs_arc_local"]
    other_pick = 0
    for spec, name, ours_acc_norm in ((run.baseline.spec, "base", summary.acc_norm_baseline),
                                      (run.candidates[0].spec, "cand", summary.acc_norm_candidate)):  # fmt: skip
        ours = {s.item_id: s for s in scores[spec]}
        for doc_id, row in _samples(root / name, "fs_arc_local").items():
            texts = row["doc"]["choices"]["text"]
            logged = [row["arguments"][f"gen_args_{i}"]["arg_1"] for i in range(len(texts))]
            assert logged == [" " + t for t in texts]  # what lm-eval logs: the delimiter, then the choice
            score = ours[str(doc_id)]
            assert score.option_chars == tuple(len(t) for t in texts), (name, doc_id)
            assert score.correct_norm == bool(row["acc_norm"]), (name, doc_id)
            other_pick += _norm_pick(row, [len(c) for c in logged]) != _norm_pick(row, [len(t) for t in texts])
        assert ours_acc_norm == pytest.approx(lm_eval_runs["results"][name]["results"]["fs_arc_local"]["acc_norm,none"])
    assert other_pick > 0


def test_mismatched_runs_are_refused(lm_eval_runs: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from flipscope.runs.lm_eval_import import import_lm_eval

    root = lm_eval_runs["root"]
    with pytest.raises(FlipscopeError, match="task fs_arc_local has no samples file"):
        import_lm_eval(root / "base", [root / "probe"], out=tmp_path / "a")
    edited = tmp_path / "cand-edited"
    shutil.copytree(root / "cand", edited)
    (path,) = list(edited.rglob("samples_fs_mmlu_local_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[3]["prompt_hash"] = "0" * 64  # another prompt (few-shot setting, template)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FlipscopeError, match=r"prompts differ .* doc_id 3"):
        import_lm_eval(root / "base", [edited], tasks=["fs_mmlu_local"], out=tmp_path / "b")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:-5]))  # fewer documents
    with pytest.raises(FlipscopeError, match="different documents"):
        import_lm_eval(root / "base", [edited], tasks=["fs_mmlu_local"], out=tmp_path / "c")
    path.write_text("not json\n")
    with pytest.raises(FlipscopeError, match="line 1: not an lm-eval sample"):
        import_lm_eval(root / "base", [edited], tasks=["fs_mmlu_local"], out=tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlipscopeError, match="no lm-eval sample logs"):
        import_lm_eval(tmp_path / "empty", [root / "cand"], out=tmp_path / "e")
    assert not any((tmp_path / x / "run.json").exists() for x in "abcde")


def _gsm8k_line(doc_id: int, filt: str, answer: str, target: str, text: str, *, correct: bool | None = None) -> str:
    row = {"doc_id": doc_id, "doc": {"question": f"q{doc_id}"}, "target": target,
           "arguments": {"gen_args_0": {"arg_0": f"Q: q{doc_id}\nA:", "arg_1": {"until": ["Q:"]}}},
           "resps": [[text]], "filtered_resps": [answer], "filter": filt, "metrics": ["exact_match"],
           "doc_hash": f"d{doc_id}", "prompt_hash": f"p{doc_id}", "target_hash": "t",
           "exact_match": float(answer == target if correct is None else correct)}  # fmt: skip
    return json.dumps(row) + "\n"


def test_gsm8k_style_logs_take_flexible_extract_as_correct_and_strict_match_as_strict(tmp_path: Path) -> None:
    """lm-eval's gsm8k logs each document once per filter; flexible-extract is flipscope's `correct`, strict-match
    its `correct_strict` (hand-written logs in lm-eval's layout)."""
    from flipscope.runs.lm_eval_import import import_lm_eval

    # (flexible answer, strict answer) per doc; targets "1", "2", "3"
    runs = {"base": [("1", "1"), ("2", "[invalid]"), ("9", "9")], "cand": [("7", "[invalid]"), ("2", "2"), ("3", "3")]}
    for name, answers in runs.items():
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        lines = []
        for doc_id, (flexible, strict) in enumerate(answers):
            target, text = str(doc_id + 1), f"Work. The answer is {flexible}."
            lines.append(_gsm8k_line(doc_id, "strict-match", strict, target, text))
            lines.append(_gsm8k_line(doc_id, "flexible-extract", flexible, target, text))
        (folder / "samples_gsm8k_2026-11-29T00-00-00.000001.jsonl").write_text("".join(lines))
    run, _ = import_lm_eval(tmp_path / "base", [tmp_path / "cand"], out=tmp_path / "run")
    s = run.summary[run.candidates[0].spec]["gsm8k"]
    assert s.n == 3 and s.acc_baseline == pytest.approx(2 / 3) and s.acc_candidate == pytest.approx(2 / 3)
    assert (s.flips_c2i, s.flips_i2c) == (1, 1) and s.choice_kl_mean is None
    assert s.free is not None and s.free.acc_strict_baseline == pytest.approx(1 / 3)
    assert s.free.acc_strict_candidate == pytest.approx(2 / 3)


def test_free_form_imports_store_the_final_answer_normalised_as_native_runs_do(tmp_path: Path) -> None:
    """lm-eval logs the filtered answer raw ("$18.", "1,000"); flipscope's own gsm8k runs store it normalised
    (tasks.gsm8k.normalise), so an import does too and all-flips compares like with like: "$18." and "18" are one
    answer, and two "[invalid]" (no final answer) are the same non-answer, as everywhere (metrics.same_answer)."""
    from flipscope.report import load_run_scores
    from flipscope.runs.lm_eval_import import import_lm_eval

    targets = ["18", "7", "1000"]
    answers = {"base": ["$18.", "[invalid]", "1,000"], "cand": ["18", "[invalid]", "1000"]}
    for name, found in answers.items():
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        lines = []
        for doc_id, (answer, target) in enumerate(zip(found, targets, strict=True)):
            right = answer != "[invalid]"  # what lm-eval's exact_match gives after its regexes_to_ignore
            lines.append(_gsm8k_line(doc_id, "flexible-extract", answer, target, f"So {answer}", correct=right))
        (folder / "samples_gsm8k_2026-11-29T00-00-00.000001.jsonl").write_text("".join(lines))
    run, folder = import_lm_eval(tmp_path / "base", [tmp_path / "cand"], out=tmp_path / "run")
    s = run.summary[run.candidates[0].spec]["gsm8k"]
    _, scores = load_run_scores(folder)
    for spec in (run.baseline.spec, run.candidates[0].spec):
        assert [x.free.answer for x in scores[spec] if x.free is not None] == ["18", "[invalid]", "1000"]
    assert s.all_flips == 0.0 and s.flips == 0.0
    assert s.free is not None and s.free.same_answer == 1.0 and s.free.invalid_baseline == 1


def _choice_line(
    doc_id: int, choices: list[str], logliks: list[float], gold: int, acc_norm: float, delimiter: str
) -> str:
    """One multiple-choice document in lm-eval 0.4's --log_samples layout."""
    args = {f"gen_args_{i}": {"arg_0": f"Question: q{doc_id}\nAnswer:", "arg_1": delimiter + c}
            for i, c in enumerate(choices)}  # fmt: skip
    acc = float(int(np.argmax(logliks)) == gold)
    row = {"doc_id": doc_id, "doc": {"choices": choices}, "target": gold, "arguments": args,
           "resps": [[[str(lp), "False"]] for lp in logliks], "filtered_resps": [[str(lp), "False"] for lp in logliks],
           "filter": "none", "metrics": ["acc", "acc_norm"], "doc_hash": f"d{doc_id}", "prompt_hash": f"p{doc_id}",
           "target_hash": "t", "acc": acc, "acc_norm": acc_norm}  # fmt: skip
    return json.dumps(row) + "\n"


@pytest.mark.parametrize("delimiter", [" ", "\n"])
def test_acc_norm_divides_by_the_choice_not_the_logged_continuation(tmp_path: Path, delimiter: str) -> None:
    """Hand-made logs where the two rules disagree: options "ab" and "abcd" with log-likelihoods −2.0 and −3.6 give
    −1.0 vs −0.9 per character of the choice (lm-eval: option 1 wins) but −0.667 vs −0.72 per character of
    delimiter + choice (option 0 wins). The target delimiter comes from lm-eval's results file (default " "). A
    logged acc_norm that the log-likelihoods do not give is refused, naming the file and doc_id."""
    from flipscope.report import load_run_scores
    from flipscope.runs.lm_eval_import import import_lm_eval

    stamp = "2026-11-29T00-00-00.000001"
    # per run: doc 0 (lengths 2 and 4; gold 1), doc 1 (equal lengths; gold 0)
    logs = {"base": ([-2.0, -3.6], 1.0), "cand": ([-2.0, -4.4], 0.0)}  # lm-eval's acc_norm on doc 0
    for name, (logliks, acc_norm) in logs.items():
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        lines = [_choice_line(0, ["ab", "abcd"], logliks, 1, acc_norm, delimiter),
                 _choice_line(1, ["x", "y"], [-1.0, -2.0], 0, 1.0, delimiter)]  # fmt: skip
        (folder / f"samples_arcish_{stamp}.jsonl").write_text("".join(lines))
        if delimiter != " ":
            config = {"configs": {"arcish": {"target_delimiter": delimiter}}, "results": {}}
            (folder / f"results_{stamp}.json").write_text(json.dumps(config))
    run, folder = import_lm_eval(tmp_path / "base", [tmp_path / "cand"], out=tmp_path / "run")
    s = run.summary[run.candidates[0].spec]["arcish"]
    assert (s.acc_norm_baseline, s.acc_norm_candidate) == (1.0, 0.5)  # dividing by 3 and 5 gives (0.5, 0.5)
    assert (s.acc_baseline, s.acc_candidate) == (0.5, 0.5)
    _, scores = load_run_scores(folder)
    assert [x.option_chars for x in scores[run.baseline.spec]] == [(2, 4), (1, 1)]
    (path,) = (tmp_path / "base").rglob("samples_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["acc_norm"] = 0.0  # what dividing by the continuation would have logged
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FlipscopeError, match=rf"samples_arcish_{stamp}\.jsonl, doc_id 0: lm-eval logged acc_norm=0"):
        import_lm_eval(tmp_path / "base", [tmp_path / "cand"], out=tmp_path / "run2")


def _multiple_input_line(doc_id: int, logliks: list[float], gold: int, acc_norm: float) -> str:
    """A Winogrande-style document: the options sit in the contexts, all sharing one continuation."""
    args = {f"gen_args_{i}": {"arg_0": f"Sentence {doc_id} with option {i}", "arg_1": " ends here."}
            for i in range(len(logliks))}  # fmt: skip
    acc = float(int(np.argmax(logliks)) == gold)
    row = {"doc_id": doc_id, "doc": {}, "target": gold, "arguments": args,
           "resps": [[[str(lp), "False"]] for lp in logliks], "filtered_resps": [[str(lp), "False"] for lp in logliks],
           "filter": "none", "metrics": ["acc", "acc_norm"], "doc_hash": f"d{doc_id}", "prompt_hash": f"p{doc_id}",
           "target_hash": "t", "acc": acc, "acc_norm": acc_norm}  # fmt: skip
    return json.dumps(row) + "\n"


def test_multiple_input_tasks_report_no_acc_norm_instead_of_acc_under_its_name(tmp_path: Path) -> None:
    """Winogrande-style logs have no per-option length to divide by: the logged acc_norm (here 0 where acc is 1) is
    not checked against acc, and acc_norm is reported as not available (None in run.json, n/a in the table), never
    as acc under another name."""
    from rich.console import Console

    from flipscope.report.table import print_run
    from flipscope.runs.lm_eval_import import import_lm_eval

    stamp = "2026-11-29T00-00-00.000001"
    logs = {"base": [[-1.0, -2.0], [-3.0, -1.0]], "cand": [[-1.0, -2.0], [-1.0, -3.0]]}  # gold 0 on both docs
    for name, docs in logs.items():
        folder = tmp_path / name / "model"
        folder.mkdir(parents=True)
        lines = [_multiple_input_line(i, logliks, 0, 0.0) for i, logliks in enumerate(docs)]
        (folder / f"samples_winoish_{stamp}.jsonl").write_text("".join(lines))
    run, _ = import_lm_eval(tmp_path / "base", [tmp_path / "cand"], out=tmp_path / "run")
    s = run.summary[run.candidates[0].spec]["winoish"]
    assert (s.acc_baseline, s.acc_candidate) == (0.5, 1.0)
    assert (s.acc_norm_baseline, s.acc_norm_candidate) == (None, None)
    console = Console(record=True, width=250)
    print_run(run, console)
    assert "acc_norm n/a" in console.export_text()
