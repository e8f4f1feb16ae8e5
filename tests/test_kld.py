"""`flipscope kld`: per-position numerics against NumPy/SciPy, the stores, and runs on the tiny Llama."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flipscope.errors import FlipscopeError
from flipscope.metrics.corpus_stats import summarize_corpus


def random_logprobs(n: int, v: int, seed: int, sharp: float = 3.0):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(n, v, generator=g) * sharp, dim=-1)


def test_agreement_counts_the_common_ranked_prefix() -> None:
    import torch

    from flipscope.metrics.corpus_kl import agreement

    base_top = torch.tensor([[5, 4, 3, 2, 1, 0, 6, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    cand = torch.log_softmax(
        torch.tensor([[0.0, 1, 2, 3, 4, 5, 0.5, 0.4, 0.3, 0.2], [9.0, 0, 8, 7, 6, 5, 4, 3, 2, 1]]), -1
    )
    assert agreement(base_top, cand).tolist() == [5, 1]


def test_corpus_summary_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    n = 500
    logp_b, logp_c = np.log(rng.uniform(0.01, 1, n)), np.log(rng.uniform(0.01, 1, n))
    kl, rev = rng.exponential(0.1, n), rng.exponential(0.2, n)
    agree = rng.integers(0, 11, n)
    top = np.log(rng.uniform(0.05, 1, n))
    s = summarize_corpus(kl=kl, kl_reverse=rev, logp_base=logp_b, logp_cand=logp_c, top_logp_base=top, agree=agree)
    assert s.ppl_base.value == pytest.approx(math.exp(-logp_b.mean()))
    assert s.ln_ppl_ratio.value == pytest.approx(np.mean(logp_b - logp_c))
    assert s.ln_ppl_ratio.err == pytest.approx(np.std(logp_b - logp_c, ddof=1) / math.sqrt(n))
    assert s.ppl_ratio.value == pytest.approx(s.ppl_cand.value / s.ppl_base.value)
    assert s.kl_mean.value == pytest.approx(kl.mean()) and s.kl_max == pytest.approx(kl.max())
    assert s.kl_percentiles["99"] == pytest.approx(np.percentile(kl, 99))
    assert s.kl_percentiles["50"] == pytest.approx(np.median(kl))
    dp = np.exp(logp_c) - np.exp(logp_b)
    assert s.dp_mean.value == pytest.approx(dp.mean()) and s.dp_rms.value == pytest.approx(np.sqrt((dp**2).mean()))
    same = (agree >= 1).mean()
    assert s.same_top.value == pytest.approx(same)
    assert s.same_top.err == pytest.approx(np.std(agree >= 1, ddof=1) / math.sqrt(n))
    assert s.topk_agreement["10"] == pytest.approx((agree >= 10).mean())
    assert sum(b.n for b in s.kl_by_confidence) == n
    assert s.ln_ppl_correlation == pytest.approx(np.corrcoef(logp_b, logp_c)[0, 1])


def test_full_store_round_trip_within_documented_precision(tmp_path: Path) -> None:
    import torch

    from flipscope.store.baseline_rows import INT16_RANGE, BaselineStore, StoreHeader

    rows = random_logprobs(30, 1000, 6, sharp=4.0)
    for code in ("int16", "float16"):
        header = StoreHeader("exact", 30, 1000, "tok", "corpus", {}, code=code)
        store = BaselineStore.create(tmp_path / code, header)
        store.write(0, rows, rows[:, 0], None)
        store.finish()
        back, _, logp = BaselineStore.open(tmp_path / code).read(0, 30)  # type: ignore[union-attr]
        assert back is not None and torch.equal(logp, rows[:, 0])
        keep = rows >= rows.amax(-1, keepdim=True) - INT16_RANGE
        err = (back - rows).abs()[keep].max().item()
        bound = 2 * INT16_RANGE / 65535 if code == "int16" else 2 * 2**-11 * float(rows[keep].abs().max())
        assert err <= bound


def test_store_refuses_another_tokenizer_or_corpus(tmp_path: Path) -> None:
    from flipscope.store.baseline_rows import BaselineStore, StoreHeader

    store = BaselineStore.create(tmp_path, StoreHeader("compact", 1, 10, "tokA", "corpusA", {}, topk=2))
    with pytest.raises(FlipscopeError, match="different tokenizer"):
        store.check_matches(tokenizer_fingerprint="tokB", vocab_size=10, corpus_sha256="corpusA", label="x")
    with pytest.raises(FlipscopeError, match="another corpus"):
        store.check_matches(tokenizer_fingerprint="tokA", vocab_size=10, corpus_sha256="corpusB", label="x")
    assert BaselineStore.open(tmp_path) is None  # unfinished stores are not used


def test_windows_follow_llama_cpp() -> None:
    from flipscope.tasks.corpus import make_windows

    windows = make_windows(list(range(100, 1150)), 512, bos_id=1)
    assert len(windows) == 2 and windows[0].ids[0] == 1 and windows[1].ids[1] == 100 + 513
    assert windows[0].first == 256 and windows[0].scored == 255
    assert make_windows(list(range(20)), 10, bos_id=None, scored_fraction=1.0)[0].first == 0
    with pytest.raises(FlipscopeError, match="fewer than one window"):
        make_windows(list(range(5)), 10, bos_id=None)


def test_tiny_llama_stores_agree_with_live(tiny_llama: Path, tmp_path: Path) -> None:
    import flipscope

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 40)
    common = {"corpus": str(corpus), "ctx": 64, "max_windows": 4, "cache_dir": tmp_path / "cache", "device": "cpu"}
    base, cands = f"hf:{tiny_llama}", ["+rtn:w4g16", "+noise:0.05"]
    live = flipscope.kld(base, cands, store="live", out=tmp_path / "live", **common)
    exact = flipscope.kld(base, cands, store="full", full_code="int16", out=tmp_path / "exact", **common)
    assert exact.run.baseline["tokenizer"] == live.run.baseline["tokenizer"] != ""  # the same vocabulary, recorded
    full = flipscope.kld(base, cands, store="compact", topk=10_000, out=tmp_path / "full", **common)
    small = flipscope.kld(base, cands, store="compact", topk=4, tail_samples=0, out=tmp_path / "small", **common)
    sampled = flipscope.kld(base, cands, store="compact", topk=16, out=tmp_path / "sampled", **common)
    for label in live.summary:
        kl_live = live.positions[label]["kl"]
        assert kl_live.size == 4 * 31 and (kl_live > 0).all()
        assert np.allclose(exact.positions[label]["kl"], kl_live, atol=2e-3, rtol=1e-2)
        assert np.allclose(full.positions[label]["kl"], kl_live, atol=1e-5, rtol=1e-4)
        assert (small.positions[label]["kl"] <= kl_live + 1e-5).all()
        diff = sampled.positions[label]["kl"] - kl_live  # unbiased: its mean is within sampling error of 0
        assert abs(diff.mean()) <= 4 * diff.std() / np.sqrt(diff.size)
        assert np.array_equal(full.positions[label]["agree"], live.positions[label]["agree"])
        assert live.summary[label].ppl_base.value == pytest.approx(exact.summary[label].ppl_base.value, rel=1e-5)
    stores = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # (beside them: their lock files)
    assert len(stores) == 5  # full, compact k=10000, k=4, k=4 with samples (live stores none); candidates
    again = flipscope.kld(base, cands[:1], store="compact", topk=4, tail_samples=0, out=tmp_path / "again", **common)
    assert np.array_equal(again.positions[f"{base}+rtn:w4g16"]["kl"], small.positions[f"{base}+rtn:w4g16"]["kl"])
    run = json.loads((tmp_path / "small" / "run.json").read_text())
    assert run["kind"] == "kld" and run["store"]["bytes_per_position"] < run["store"]["llama_cpp_bytes_per_position"]
    assert (run["settings"]["kl_forward"], run["settings"]["kl_reverse"]) == ("lower bound", "lower bound")
    assert (sampled.run.settings.kl_forward, sampled.run.settings.kl_reverse) == ("unbiased estimate", "lower bound")
    assert (live.run.settings.kl_forward, live.run.settings.kl_reverse) == ("exact", "exact")
    from rich.console import Console

    from flipscope.report.kld_table import load_kld_run, print_kld_run

    console = Console(record=True, width=250)
    print_kld_run(load_kld_run(tmp_path / "sampled"), console)
    shown = console.export_text()
    assert "rev KL (lower bound)" in shown and "KL(C‖B) mean (lower bound)" in shown and "KL mean (lower" not in shown
    assert load_kld_run(tmp_path / "small").summary[f"{base}+noise:0.05"].kl_mean.value == pytest.approx(
        small.summary[f"{base}+noise:0.05"].kl_mean.value
    )


def test_other_tokenizer_is_refused(tiny_llama: Path, tiny_llama_other_vocab: Path, tmp_path: Path) -> None:
    import flipscope

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. " * 60)
    with pytest.raises(FlipscopeError, match="different tokenizer or vocabulary"):
        flipscope.kld(f"hf:{tiny_llama}", [f"hf:{tiny_llama_other_vocab}"], corpus=str(corpus), ctx=32,
                      cache_dir=tmp_path / "c", out=tmp_path / "o", device="cpu")  # fmt: skip


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flipscope", "kld", "bundled:smollm2-135m", "+rtn:w8", "--corpus", str(tmp_path / "no")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "is not a file, a folder or a known source" in proc.stderr
    assert "Traceback" not in proc.stderr


_MEMORY_PROBE = """
import resource, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from flipscope.models.base import ModelInfo
from flipscope.models.hf import HFBackend
from flipscope.tasks.corpus import make_windows
torch.manual_seed(0)
config = LlamaConfig(vocab_size=150_000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
model = LlamaForCausalLM(config).eval()
backend = HFBackend(model, None, ModelInfo("probe", 150_000, "t", {}), "cpu")
window = make_windows(list(range(4096)), 4096, bos_id=None, scored_fraction=1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
for logprobs, targets in backend.corpus_logprobs(window, rows=256):
    assert logprobs.shape[0] <= 256
    n += logprobs.shape[0]
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(n, round(grown))
"""


def test_long_context_with_a_large_vocabulary_runs_in_bounded_memory() -> None:
    """4096 positions × 150k vocabulary would be 2.4 GB of float32 logits; slices keep the growth far below."""
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True)
    positions, grown_mb = (int(x) for x in proc.stdout.split())
    assert positions == 4095
    assert grown_mb < 800, f"peak RSS grew by {grown_mb} MB"


def test_corpus_error_bars_count_windows_not_positions() -> None:
    """Positions of one window share a shift (as a shared context makes them): the standard error of every mean is
    the spread of the window means over √G, several times the per-position s/√n that treats them as independent."""
    rng = np.random.default_rng(1)
    g, per = 24, 255
    window = np.repeat(np.arange(g), per)
    shift = np.repeat(rng.normal(0, 0.05, g), per)  # [n] one shared offset per window
    kl = rng.exponential(0.1, g * per) + np.abs(shift)
    logp_b = np.log(rng.uniform(0.05, 1, g * per))
    logp_c = logp_b - np.abs(shift) - rng.exponential(0.02, g * per)
    agree = (rng.uniform(size=g * per) < 0.8 - np.abs(shift)).astype(int) * 10
    top = np.log(rng.uniform(0.05, 1, g * per))
    cols = dict(kl=kl, kl_reverse=kl * 1.1, logp_base=logp_b, logp_cand=logp_c, top_logp_base=top, agree=agree)
    s = summarize_corpus(**cols, window=window)
    flat = summarize_corpus(**cols)

    def by_window(x: np.ndarray) -> float:  # independent reference: the window means' standard error
        means = x.reshape(g, per).mean(axis=1)
        return float(means.std(ddof=1) / math.sqrt(g))

    assert s.kl_mean.value == pytest.approx(kl.mean())
    assert s.kl_mean.err == pytest.approx(by_window(kl))
    assert s.kl_reverse_mean.err == pytest.approx(by_window(kl * 1.1))
    assert s.ln_ppl_ratio.err == pytest.approx(by_window(logp_b - logp_c))
    assert s.same_top.err == pytest.approx(by_window((agree >= 1).astype(float)))
    dp = np.exp(logp_c) - np.exp(logp_b)
    assert s.dp_mean.err == pytest.approx(by_window(dp))
    assert s.ppl_base.err == pytest.approx(s.ppl_base.value * by_window(-logp_b))
    assert s.kl_mean.err > 2 * flat.kl_mean.err  # the per-position figure was too small
    assert s.ln_ppl_ratio.err > 2 * flat.ln_ppl_ratio.err


def test_one_window_has_no_error_bar_and_reads_back() -> None:
    """One window gives no standard error (NaN); run.json writes it as null and reading it back must not fail (a
    `kld --chunks 1` run, or `screen --windows 1`, could not be reported)."""
    import math

    from flipscope.metrics.corpus_stats import ValueErr

    stored = ValueErr(value=0.5, err=math.nan).model_dump_json()
    assert '"err":null' in stored
    again = ValueErr.model_validate_json(stored)
    assert again.value == 0.5 and math.isnan(again.err)
