"""Pipeline tests: the scripted mock backend and a tiny random Llama through ``compare`` and ``report``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from flipscope import compare, load_run
from flipscope.metrics.kl import kl_exact
from flipscope.models import parse_spec
from flipscope.models.base import Decoding, GenRequest
from flipscope.store import read_run
from flipscope.tasks import ScoreRequest
from tests.conftest import Script

V = 16


def rows_for(seed: int, shift: float = 0.0) -> callable:  # type: ignore[valid-type]
    def rows(i: int, o: int) -> np.ndarray:
        rng = np.random.default_rng(1000 * i + o)
        logits = rng.normal(size=(2, V)) * 2  # [T=2, V]
        logits += shift * np.random.default_rng(seed + 7 * i + o).normal(size=(2, V))
        return (logits - special.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float32)

    return rows


def answers(choices: dict[int, int]) -> callable:  # type: ignore[valid-type]
    """Pick option ``choices.get(i, 0)`` for request i, with a fixed margin."""

    def logprobs(i: int, request: ScoreRequest) -> tuple[float, ...]:
        pick = choices.get(i, 0)
        return tuple(-1.0 if o == pick else -3.0 for o in range(len(request.continuations)))

    return logprobs


def from_records(folder: Path, candidate: str) -> dict[str, float]:
    """Accuracy of the candidate and the mean choice KL(B‖C), recomputed from records.parquet with scipy alone."""
    from scipy import stats

    records = pd.read_parquet(folder / "records.parquet")
    base = records[records.role == "baseline"].set_index("item_id")
    cand = records[records.model == candidate].set_index("item_id")
    kls = [stats.entropy(special.softmax(base.loc[i, "choice_logprobs"]), special.softmax(c)) for i, c in
           cand["choice_logprobs"].items()]  # fmt: skip
    return {"acc_candidate": float(cand["correct"].mean()), "choice_kl_mean": float(np.mean(kls))}


def test_mock_pipeline_metrics_and_token_kl(scripts, mc_file: Path, tmp_path: Path) -> None:
    # mc_file answers are i % 4; baseline right on items 0-5, candidate flips 2 to wrong and 1 to right.
    base_choices = {i: (i % 4 if i < 6 else (i + 1) % 4) for i in range(12)}
    cand_choices = dict(base_choices) | {0: 1, 1: 2, 7: 7 % 4, 9: (9 + 2) % 4}
    scripts["base"] = Script(answers(base_choices), rows_for(0), vocab=V)
    scripts["cand"] = Script(answers(cand_choices), rows_for(1, shift=0.5), vocab=V)
    result = compare(
        "mock:base",
        ["mock:cand"],
        tasks=[str(mc_file)],
        topk=V,
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    s = result.summary["mock:cand"]["planets"]
    assert s.n == 12
    assert s.acc_baseline == pytest.approx(6 / 12) and s.acc_candidate == pytest.approx(5 / 12)
    assert (s.flips_c2i, s.flips_i2c) == (2, 1) and s.flips == pytest.approx(3 / 12)
    assert s.all_flips == pytest.approx(4 / 12)
    # with top-k = V the stored baseline is exact: token KL equals the mean of full-vocabulary KL
    base_rows, cand_rows = rows_for(0), rows_for(1, shift=0.5)
    expected = np.mean(
        [np.mean([kl_exact(base_rows(i, o), cand_rows(i, o))[0].mean() for o in range(4)]) for i in range(12)]
    )
    assert s.token_kl_mean == pytest.approx(expected, rel=1e-4)


def test_baseline_runs_once_and_is_reused(scripts, mc_file: Path, tmp_path: Path) -> None:
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["c1"] = Script(answers({1: 1}), rows_for(1), vocab=V)
    scripts["c2"] = Script(answers({2: 3}), rows_for(2), vocab=V)
    kwargs = {"tasks": [str(mc_file)], "cache_dir": tmp_path / "cache", "topk": 4}
    first = compare("mock:base", ["mock:c1", "mock:c2"], out=tmp_path / "a", **kwargs)
    assert len(scripts["base"].calls) == 1  # N candidates cost N + 1 passes
    assert len(scripts["c1"].calls) == 1 and len(scripts["c2"].calls) == 1
    second = compare("mock:base", ["mock:c2"], out=tmp_path / "b", **kwargs)
    assert len(scripts["base"].calls) == 1  # not run again
    assert second.run.baseline.reused == {"planets": True}
    assert second.summary["mock:c2"] == first.summary["mock:c2"]
    compare("mock:base", ["mock:c2"], out=tmp_path / "c", use_cache=False, **kwargs)
    assert len(scripts["base"].calls) == 2


def test_different_tokenizer_reports_choice_metrics_without_token_kl(scripts, mc_file: Path, tmp_path: Path) -> None:
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["other"] = Script(answers({3: 1}), rows_for(1), tokenizer="another-vocab", vocab=V)
    result = compare("mock:base", ["mock:other"], tasks=[str(mc_file)], out=tmp_path / "r", cache_dir=tmp_path / "c")
    s = result.summary["mock:other"]["planets"]
    # the baseline picks option 0 everywhere; the other model too, except item 3 (option 1: wrong as well)
    assert s.token_kl_mean is None and s.flips == 0.0 and s.all_flips == pytest.approx(1 / 12)
    b, c = special.softmax([-1.0, -3.0, -3.0, -3.0]), special.softmax([-3.0, -1.0, -3.0, -3.0])
    assert s.choice_kl_mean == pytest.approx(float(np.sum(b * np.log(b / c))) / 12, rel=1e-9)
    assert any("token KL missing" in w for w in s.warnings)


def test_tiny_llama_compare_report_roundtrip(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = compare(
        f"hf:{tiny_llama}",
        ["+rtn:w8", "+rtn:w2g16"],
        tasks=[str(mc_file)],
        out=out,
        cache_dir=tmp_path / "cache",
        fewshot=0,
    )
    s8 = result.summary[f"hf:{tiny_llama}+rtn:w8"]["planets"]
    s2 = result.summary[f"hf:{tiny_llama}+rtn:w2g16"]["planets"]
    assert s8.n == s2.n == 12
    # 2-bit moves the distributions more than 8-bit (measured: token KL 4.4e-5 and 0.28, choice KL 5.2e-6 and 0.079)
    assert 0 < s8.token_kl_mean < 1e-3 < 0.05 < s2.token_kl_mean < 5  # type: ignore[operator]
    for spec, s in ((f"hf:{tiny_llama}+rtn:w8", s8), (f"hf:{tiny_llama}+rtn:w2g16", s2)):
        again = from_records(out, spec)
        assert s.acc_candidate == pytest.approx(again["acc_candidate"])
        assert s.choice_kl_mean == pytest.approx(again["choice_kl_mean"], rel=1e-6, abs=1e-12)
    assert s8.choice_kl_mean < s2.choice_kl_mean  # type: ignore[operator]
    # the run directory: typed run.json and a records table pandas loads
    run, _records = read_run(out)
    assert set(run.summary) == {f"hf:{tiny_llama}+rtn:w8", f"hf:{tiny_llama}+rtn:w2g16"}
    for key in (
        "n",
        "acc_baseline",
        "acc_candidate",
        "delta_acc",
        "flips",
        "flips_c2i",
        "flips_i2c",
        "all_flips",
        "mcnemar_p",
        "choice_kl_mean",
        "token_kl_mean",
    ):
        assert key in run.summary[f"hf:{tiny_llama}+rtn:w8"]["planets"].model_dump()
    frame = pd.read_parquet(out / "records.parquet")
    assert {"task", "item_id", "model", "choice", "correct", "choice_logprobs"} <= set(frame.columns)
    assert len(frame) == 3 * 12
    assert len(pd.read_parquet(out / "items.parquet")) == 12
    # report recomputes the same summary from the files alone
    reloaded = load_run(out)
    assert reloaded.summary == result.summary


@pytest.mark.parametrize("suffix", ["", "+kv:int8", "+kv:int4"])
def test_tiny_llama_scores_match_full_sequence_reference(tiny_llama: Path, suffix: str) -> None:
    """Prefix sharing, batched options and cache reuse give the same log-likelihoods as one pass per option, also
    with a quantized KV cache (its quantizer is idempotent, so a cached prefix reads back the same values)."""
    import torch

    from flipscope.models import load_backend

    backend = load_backend(parse_spec(f"hf:{tiny_llama}{suffix}"))
    requests = [
        ScoreRequest(
            "The following are questions.\n\nQuestion: Mars?\nAnswer: planet\n\n",
            "Question: Paris?\nAnswer:",
            (" France", " the capital of Italy", " four"),
        ),
        ScoreRequest(
            "The following are questions.\n\nQuestion: Mars?\nAnswer: planet\n\n",
            "Question: Rome?\nAnswer:",
            (" Italy", " two plus two"),
        ),
        ScoreRequest("", "Q?\nA. x\nB. y\nAnswer:", (" A", " B")),
        ScoreRequest("", "A much longer question about the planets Mercury and Venus?\nAnswer:", (" yes", " no way")),
        ScoreRequest("Header.\n\n", "Short?\nAnswer:", (" the capital of France is Paris", " x")),
        ScoreRequest("Header.\n\n", "A longer prompt that shares the header?\nAnswer:", (" Rome", " two plus two")),
        # one multi-token option: prompt and option run as one left-padded row (Winogrande, teacher forcing)
        ScoreRequest("Tell me.\n\n", "Sarah beat Maria at chess so Sarah", (" was proud of the win.",)),
        ScoreRequest("Tell me.\n\n", "Sarah beat Maria so Maria", (" was proud of the win today.",)),
        ScoreRequest("", "A standalone context", (" continues here with words",)),
        ScoreRequest("", "Another", (" one",)),
    ]
    got = backend.score(requests)
    # a tiny logits budget forces every option into its own chunk: same numbers
    from flipscope.models._hf_score import PrefixScorer

    net, tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    chunked = PrefixScorer(net, tokenizer, "cpu", label="x", logits_budget=1).score(requests)
    one_by_one = PrefixScorer(net, tokenizer, "cpu", label="x", max_batch=1).score(requests)
    for a, b, c in zip(got, chunked, one_by_one, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-4)
    model, tok = backend.model, backend.tokenizer  # type: ignore[attr-defined]
    for request, scores in zip(requests, got, strict=True):
        ctx = tok.encode(request.prefix + request.prompt, add_special_tokens=False)  # the context as one text
        for cont, value in zip(request.continuations, scores.logprobs, strict=True):
            ids = tok.encode(cont, add_special_tokens=False)
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ctx + ids])).logits[0].float(), -1)
            ref = sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(ids))
            assert value == pytest.approx(ref, abs=1e-4)


def test_tiny_llama_vocab_mismatch(
    tiny_llama: Path, tiny_llama_other_vocab: Path, mc_file: Path, tmp_path: Path
) -> None:
    result = compare(
        f"hf:{tiny_llama}",
        [f"hf:{tiny_llama_other_vocab}"],
        tasks=[str(mc_file)],
        out=tmp_path / "r",
        cache_dir=tmp_path / "c",
    )
    s = result.summary[f"hf:{tiny_llama_other_vocab}"]["planets"]
    assert s.token_kl_mean is None and s.n == 12 and s.mcnemar_p <= 1.0
    again = from_records(tmp_path / "r", f"hf:{tiny_llama_other_vocab}")
    assert s.acc_candidate == pytest.approx(again["acc_candidate"])  # choice-level metrics still measured
    assert s.choice_kl_mean == pytest.approx(again["choice_kl_mean"], rel=1e-6) and s.choice_kl_mean > 0
    assert any("different tokenizer" in note for note in result.run.notes)


def exact_token_kl(base_seed: int, cand_seed: int, shift: float) -> float:
    base_rows, cand_rows = rows_for(base_seed), rows_for(cand_seed, shift=shift)
    return float(
        np.mean([np.mean([kl_exact(base_rows(i, o), cand_rows(i, o))[0].mean() for o in range(4)]) for i in range(12)])
    )


@pytest.mark.parametrize(("base_k", "cand_k"), [(0, 4), (4, 0), (4, 6)])
def test_top_k_rows_give_top_k_approximate_token_kl(
    scripts, mc_file: Path, tmp_path: Path, base_k: int, cand_k: int
) -> None:
    """A side that hands over only its top-k (a server) still gets token KL: a lower bound, labelled as such."""
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V, topk=base_k)
    scripts["cand"] = Script(answers({}), rows_for(1, shift=0.5), vocab=V, topk=cand_k, tokenizer="server:x")
    result = compare("mock:base", ["mock:cand"], tasks=[str(mc_file)], topk=V, out=tmp_path / "r",
                     cache_dir=tmp_path / "c")  # fmt: skip
    approx = result.summary["mock:cand"]["planets"].token_kl_mean
    exact = exact_token_kl(0, 1, 0.5)
    assert approx is not None and 0.2 * exact < approx <= exact + 1e-6
    assert result.run.candidates[0].details["token_kl"] == "top-k approximate (lower bound)"
    assert any("top-k approximate" in note for note in result.run.notes)
    from rich.console import Console

    from flipscope.report.table import print_run

    console = Console(record=True, width=200)
    print_run(load_run(tmp_path / "r"), console)
    assert "mock:cand  vs  mock:base  · token KL top-k approximate (lower bound)" in console.export_text()


def test_top_k_with_every_token_named_is_exact(scripts, mc_file: Path, tmp_path: Path) -> None:
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["cand"] = Script(answers({}), rows_for(1, shift=0.5), vocab=V, topk=V, tokenizer="server:x")
    result = compare("mock:base", ["mock:cand"], tasks=[str(mc_file)], topk=V, out=tmp_path / "r",
                     cache_dir=tmp_path / "c")  # fmt: skip
    assert result.summary["mock:cand"]["planets"].token_kl_mean == pytest.approx(exact_token_kl(0, 1, 0.5), rel=1e-4)


def test_capabilities_are_checked_before_anything_runs(scripts, mc_file: Path, tmp_path: Path) -> None:
    from flipscope.errors import FlipscopeError

    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["nolp"] = Script(answers({}), multiple_choice=False)
    scripts["short"] = Script(answers({}), max_context=3)
    kwargs = {"tasks": [str(mc_file)], "cache_dir": tmp_path / "c"}
    with pytest.raises(FlipscopeError, match="cannot score multiple-choice options: its server returns no prompt"):
        compare("mock:base", ["mock:nolp"], out=tmp_path / "a", **kwargs)
    with pytest.raises(FlipscopeError, match=r"over the model's 3-token context"):
        compare("mock:base", ["mock:short"], out=tmp_path / "b", **kwargs)
    assert scripts["nolp"].calls == [] and scripts["short"].calls == []  # refused before scoring
    assert len(scripts["base"].calls) == 1  # the finished baseline pass was kept and reused


def test_tiny_llama_capabilities_generation_and_context_check(tiny_llama: Path, tmp_path: Path) -> None:
    from flipscope.errors import FlipscopeError
    from flipscope.models import load_backend
    from flipscope.passes.scoring import check_backend

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"))
    caps = backend.info.capabilities
    assert caps.multiple_choice and caps.rows == "full" and caps.max_context == 512
    assert not caps.chat  # the test tokenizer has no chat template: generation continues the plain text
    answer = backend.generate([GenRequest("The capital of France is")], Decoding(max_new_tokens=4))
    assert len(answer) == 1 and answer[0].text and answer[0].new_tokens == 4
    pieces = backend.vocabulary_pieces()
    text = "The capital of France is Paris."
    ids = backend.tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    assert len(pieces) == backend.info.vocab_size and "".join(pieces[i] for i in ids) == text
    check_backend(backend, [ScoreRequest("", "Question: Paris?\nAnswer:", (" France",))])
    with pytest.raises(FlipscopeError, match="over the model's 512-token context"):
        check_backend(backend, [ScoreRequest("", "Mars Venus " * 400, (" France",))])


def test_a_store_without_tail_samples_is_labelled_a_lower_bound(scripts, mc_file: Path, tmp_path: Path) -> None:
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["cand"] = Script(answers({}), rows_for(1, shift=0.5), vocab=V)
    kwargs = {"tasks": [str(mc_file)], "topk": 4, "cache_dir": tmp_path / "c"}
    bound = compare("mock:base", ["mock:cand"], tail_samples=0, out=tmp_path / "r", **kwargs)
    sampled = compare("mock:base", ["mock:cand"], out=tmp_path / "s", **kwargs)
    b = bound.summary["mock:cand"]["planets"].token_kl_mean
    s = sampled.summary["mock:cand"]["planets"].token_kl_mean
    exact = exact_token_kl(0, 1, 0.5)
    assert 0 < b < exact  # type: ignore[operator]  # top-4 + rest: a lower bound of the full-vocabulary KL
    assert s == pytest.approx(exact, rel=0.02)  # + 64 sampled tail tokens: unbiased (measured: within 0.1%)
    assert bound.run.candidates[0].details["token_kl"] == "lower bound (top-k + rest, no tail samples)"
    assert sampled.run.candidates[0].details["token_kl"].startswith("unbiased estimate")
    from rich.console import Console

    from flipscope.report.table import print_run

    console = Console(record=True, width=200)
    print_run(load_run(tmp_path / "r"), console)
    assert "· token KL lower bound (top-k + rest, no tail samples)" in console.export_text()


def test_positions_whose_top_k_lists_share_no_token_are_counted_not_scored(
    scripts, mc_file: Path, tmp_path: Path
) -> None:
    scripts["base"] = Script(answers({}), rows_for(0), vocab=V, topk=1)
    scripts["cand"] = Script(answers({}), rows_for(1, shift=3.0), vocab=V, topk=1, tokenizer="server:x")
    result = compare("mock:base", ["mock:cand"], tasks=[str(mc_file)], topk=V, out=tmp_path / "r",
                     cache_dir=tmp_path / "c")  # fmt: skip
    notes = [n for n in result.run.notes if "share no token" in n]
    assert len(notes) == 1 and "left out of token KL (not scored 0)" in notes[0]
