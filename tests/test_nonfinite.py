"""NaN or infinite log-probabilities: reported per item (per window for corpora) and never averaged in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from flipscope import compare, load_run
from flipscope.errors import FlipscopeError
from flipscope.metrics import ItemScore
from flipscope.metrics.corpus_stats import summarize_corpus
from flipscope.metrics.records import Pair
from flipscope.metrics.summary import summarize
from flipscope.report.table import render_run
from flipscope.store.kld_run import POSITION_COLUMNS, summarize_positions
from tests.conftest import Script
from tests.test_pipeline import V, answers, rows_for


def _item(i: int, logprobs: tuple[float, ...], token_kl: float | None = None) -> ItemScore:
    return ItemScore("t", f"q{i}", "s", i % 3, logprobs, token_kl=token_kl)


def test_items_with_nan_or_inf_are_listed_and_left_out_of_every_number() -> None:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(20):
        base, cand = tuple(rng.normal(size=3)), tuple(rng.normal(size=3))
        pairs.append(Pair(_item(i, base), _item(i, cand, token_kl=float(rng.random()))))
    bad = {3: "candidate", 8: "baseline", 11: "candidate"}
    broken = list(pairs)
    broken[3] = Pair(pairs[3].baseline, _item(3, (0.1, math.nan, -1.0), token_kl=0.2))
    broken[8] = Pair(_item(8, (math.inf, -1.0, -2.0)), pairs[8].candidate)
    broken[11] = Pair(pairs[11].baseline, _item(11, pairs[11].candidate.logprobs, token_kl=math.nan))
    s = summarize(broken)
    clean = summarize([p for i, p in enumerate(pairs) if i not in bad])  # the same numbers, computed independently
    assert s.n == 17 == clean.n
    for field in ("acc_baseline", "acc_candidate", "flips", "all_flips", "choice_kl_mean", "token_kl_mean"):
        assert getattr(s, field) == getattr(clean, field)
        assert getattr(s, field) is not None and math.isfinite(getattr(s, field))
    assert s.nonfinite_candidate == ["t/q3", "t/q11"] and s.nonfinite_baseline == ["t/q8"]
    assert any("2 of 20 items left out" in w and "candidate" in w for w in s.warnings)


def test_a_candidate_scoring_nan_on_some_items_keeps_the_run_and_reports_them(
    scripts, mc_file: Path, tmp_path: Path
) -> None:
    def cand(i: int, request):  # type: ignore[no-untyped-def]
        values = answers({1: 2, 5: 1})(i, request)
        return tuple(math.nan for _ in values) if i in (4, 9) else values

    scripts["base"] = Script(answers({}), rows_for(0), vocab=V)
    scripts["cand"] = Script(cand, rows_for(1, shift=0.3), vocab=V)
    result = compare("mock:base", ["mock:cand"], tasks=[str(mc_file)], topk=V, out=tmp_path / "r",
                     cache_dir=tmp_path / "c")  # fmt: skip
    s = result.summary["mock:cand"]["planets"]
    assert s.n == 10 and s.nonfinite_candidate == ["planets/q4", "planets/q9"]
    assert s.flips is not None and math.isfinite(s.flips) and math.isfinite(s.choice_kl_mean or math.nan)
    again = load_run(tmp_path / "r").summary["mock:cand"]["planets"]  # recomputed from the stored records
    assert again.n == 10 and again.nonfinite_candidate == s.nonfinite_candidate and again.flips == s.flips
    console = Console(record=True, width=200)
    console.print(render_run(load_run(tmp_path / "r")))
    assert "2 of 12 items left out" in console.export_text()


def test_nan_weights_give_a_reported_candidate_not_a_lost_run(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(broken)
    result = compare(f"hf:{tiny_llama}", [f"hf:{broken}", "+rtn:w8"], tasks=[str(mc_file)], out=tmp_path / "r",
                     cache_dir=tmp_path / "cache", device="cpu")  # fmt: skip
    nan = result.summary[f"hf:{broken}"]["planets"]
    assert nan.n == 0 and len(nan.nonfinite_candidate) == 12 and nan.flips is None and nan.acc_candidate is None
    ok = result.summary[f"hf:{tiny_llama}+rtn:w8"]["planets"]
    assert ok.n == 12 and ok.nonfinite_candidate == [] and ok.choice_kl_mean is not None  # the others stand
    assert (tmp_path / "r" / "run.json").exists()


def _positions(seed: int, windows: int = 5, per: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = windows * per
    cols = {
        "kl": rng.random(n) * 0.1,
        "kl_reverse": rng.random(n) * 0.1,
        "logp_base": -rng.random(n) * 3,
        "logp_cand": -rng.random(n) * 3,
        "top_logp_base": -rng.random(n),
        "agree": rng.integers(0, 5, n),
    }
    return {**cols, "window": np.repeat(np.arange(windows), per).astype(np.int32)}


def test_corpus_windows_with_nan_are_left_out_whole_and_listed() -> None:
    cols = _positions(1)
    cols["logp_cand"][9] = np.nan  # window 1
    cols["kl"][30] = np.inf  # window 4
    s = summarize_positions(cols, "cand")
    keep = ~np.isin(cols["window"], [1, 4])
    clean = summarize_corpus(**{c: cols[c][keep] for c in POSITION_COLUMNS}, window=cols["window"][keep])
    assert s.excluded_windows == [1, 4] and s.n == 21
    assert s.kl_mean == clean.kl_mean and s.ppl_cand == clean.ppl_cand and math.isfinite(s.kl_mean.value)
    for c in POSITION_COLUMNS:
        if c != "agree":
            cols[c][:] = np.nan
    with pytest.raises(FlipscopeError, match="cand gave NaN or infinite log-probabilities in every window"):
        summarize_positions(cols, "cand")
