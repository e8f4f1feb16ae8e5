"""Numbers say what they are: `compare`'s token KL from a stored baseline is labelled an estimate (or a bound, or
exact where the stored top-k holds the whole vocabulary) in run.json, the pass, the tables and the notes; old
passes that said "exact" still load, as what they were."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from flipscope import compare, load_run
from flipscope.metrics.token_kl import TokenKL
from flipscope.report.table import print_run
from tests.conftest import Script

V = 24  # the mocks' vocabulary: larger than the stored top-k below, so the baseline has a tail


def _rows(seed: int, shift: float = 0.0):  # type: ignore[no-untyped-def]
    def rows(i: int, o: int) -> np.ndarray:
        logits = np.random.default_rng([i, o]).normal(size=(2, V)) * 2  # [T=2, V]
        logits += shift * np.random.default_rng([seed, i, o]).normal(size=(2, V))
        return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)

    return rows


def _scripts(scripts: dict[str, Script]) -> None:
    def pick(i: int, request: object) -> tuple[float, ...]:
        return tuple(-1.0 if o == 0 else -3.0 for o in range(len(request.continuations)))  # type: ignore[attr-defined]

    scripts["base"] = Script(pick, rows=_rows(0), vocab=V)
    scripts["cand"] = Script(pick, rows=_rows(1, shift=0.5), vocab=V)


def _shown(folder: Path) -> str:
    console = Console(record=True, width=250)
    print_run(load_run(folder), console)
    return console.export_text()


@pytest.mark.parametrize(
    ("topk", "samples", "kind"),
    [(4, 8, TokenKL.ESTIMATE), (4, 0, TokenKL.LOWER_BOUND), (V, 8, TokenKL.EXACT)],
    ids=["tail samples", "no tail samples", "top-k = vocabulary"],
)
def test_token_kl_is_labelled_by_how_the_baseline_was_stored(
    scripts: dict[str, Script], mc_file: Path, tmp_path: Path, topk: int, samples: int, kind: TokenKL
) -> None:
    _scripts(scripts)
    result = compare("mock:base", ["mock:cand"], tasks=[str(mc_file)], topk=topk, tail_samples=samples,
                     out=tmp_path / "r", cache_dir=tmp_path / "c")  # fmt: skip
    assert result.summary["mock:cand"]["planets"].token_kl_mean is not None
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["candidates"][0]["details"]["token_kl"] == kind.value != "exact"
    passes = [json.loads(p.read_text()) for p in (tmp_path / "c").rglob("pass.json")]
    assert {p["token_kl"] for p in passes if p.get("token_kl")} == {kind.value}  # the candidate's pass
    assert f"· token KL {kind.value}" in _shown(tmp_path / "r")
    said = {TokenKL.ESTIMATE: "token KL is an unbiased estimate", TokenKL.LOWER_BOUND: "token KL is a lower bound"}
    if kind in said:  # the note under the table says it too
        assert any(n.startswith(said[kind]) for n in result.run.notes), result.run.notes


@pytest.mark.parametrize(("samples", "kind"), [(8, TokenKL.ESTIMATE), (0, TokenKL.LOWER_BOUND)])
def test_a_pass_stored_as_exact_by_an_older_version_loads_as_what_it_was(
    scripts: dict[str, Script], mc_file: Path, tmp_path: Path, samples: int, kind: TokenKL
) -> None:
    _scripts(scripts)
    common = {"tasks": [str(mc_file)], "topk": 4, "tail_samples": samples, "cache_dir": tmp_path / "c"}
    compare("mock:base", ["mock:cand"], out=tmp_path / "r1", **common)  # type: ignore[arg-type]
    stored = [p for p in (tmp_path / "c").rglob("pass.json") if json.loads(p.read_text()).get("token_kl")]
    assert len(stored) == 1
    old = json.loads(stored[0].read_text())
    stored[0].write_text(json.dumps({**old, "token_kl": "exact"}))  # what versions before this one wrote
    again = compare("mock:base", ["mock:cand"], out=tmp_path / "r2", **common)  # type: ignore[arg-type]
    assert again.run.candidates[0].reused == {"planets": True}
    assert again.run.candidates[0].details["token_kl"] == kind.value
    assert TokenKL.read("exact", tail_samples=samples) is kind
    assert TokenKL.read(kind.value, tail_samples=samples) is kind and TokenKL.read(None, tail_samples=1) is None


def test_kld_says_what_its_per_position_statistics_are(tiny_llama: Path, tmp_path: Path) -> None:
    """kld's percentiles, maximum, σ and most divergent positions are exact only live; from the full store they
    carry its grid's loss, from the compact store they are per-position estimates (or bounds): every table, note
    and run.json says which, and the full store is not called exact."""
    import flipscope
    from flipscope.report.kld_table import load_kld_run, print_kld_run

    corpus = tmp_path / "text.txt"
    corpus.write_text("The planets circle the sun. Paris is the capital of France. " * 30)
    common = {"corpus": str(corpus), "ctx": 32, "max_windows": 3, "cache_dir": tmp_path / "cache", "device": "cpu"}
    runs = {
        "live": {"store": "live"},
        "full": {"store": "full", "full_code": "int16"},
        "float16": {"store": "full", "full_code": "float16"},
        "sampled": {"store": "compact", "topk": 8, "tail_samples": 4},
        "bound": {"store": "compact", "topk": 8, "tail_samples": 0},
    }
    want = {
        "live": ("exact", "exact"),
        "full": ("int16-grid baseline", "int16-grid baseline"),
        "float16": ("float16 baseline", "float16 baseline"),
        "sampled": ("unbiased estimate", "estimate"),
        "bound": ("lower bound", "lower bound"),
    }
    for name, kw in runs.items():
        result = flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g16"], out=tmp_path / name, **common, **kw)
        s = result.run.settings
        assert (s.kl_forward, s.kl_positions) == want[name], name
        assert s.store == kw["store"] and ("exact" not in (s.store, s.kl_forward) or name == "live")
        console = Console(record=True, width=250)
        print_kld_run(load_kld_run(tmp_path / name), console)
        shown = console.export_text()
        if name == "live":
            assert "KL percentiles  " in shown and "most divergent positions:" in shown
            continue
        label = want[name][1]
        for row in ("KL p99", "KL max", "KL σ / max / min", "KL percentiles", "most divergent positions"):
            assert f"{row} ({label})" in shown, (name, row)
        said = {"full": "int16 grid", "float16": "float16", "sampled": "estimates", "bound": "lower bounds"}[name]
        assert any("percentiles" in n and said in n for n in result.run.notes), result.run.notes
    assert s.full_code is None
    assert flipscope.kld(f"hf:{tiny_llama}", ["+rtn:w4g16"], store="exact", out=tmp_path / "alias",
                         **common).run.settings.store == "full"  # fmt: skip
    # a run.json written before the full store had its name: store "exact", its mean KL called exact
    old = json.loads((tmp_path / "full" / "run.json").read_text())
    settings = {k: v for k, v in old["settings"].items() if k not in ("full_code", "kl_positions")}
    old["settings"] = {**settings, "store": "exact", "exact_code": "int16", "kl_forward": "exact",
                       "kl_reverse": "exact"}  # fmt: skip
    (tmp_path / "full" / "run.json").write_text(json.dumps(old))
    back = load_kld_run(tmp_path / "full").settings
    assert (back.store, back.full_code, back.kl_forward, back.kl_positions) == (
        "full",
        "int16",
        "int16-grid baseline",
        "int16-grid baseline",
    )


@pytest.mark.parametrize(("samples", "kind"), [(64, TokenKL.ESTIMATE), (0, TokenKL.LOWER_BOUND)])
def test_an_old_run_json_that_says_exact_is_titled_what_its_token_kl_was(
    tmp_path: Path, samples: int, kind: TokenKL
) -> None:
    """A run.json written before the labels: its candidate's details say token_kl "exact" for the sampled estimate
    (or the bound, at --tail-samples 0); the table's title reads it as what it was, as an old pass is read."""
    from tests.test_report_merge import write_compare

    folder = write_compare(tmp_path / "old", tail_samples=samples)
    raw = json.loads((folder / "run.json").read_text())
    raw["candidates"][0]["details"]["token_kl"] = "exact"  # what versions before the labels wrote
    (folder / "run.json").write_text(json.dumps(raw))
    shown = " ".join(_shown(folder).split())  # the title wraps to the table's width
    assert f"· token KL {kind.value}" in shown and "token KL exact" not in shown
