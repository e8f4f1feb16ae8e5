"""Per-tensor GGUF files written by llama.cpp's quantizer on the bundled model: a plan's types land in the file and
its size is what flipscope counts, the file runs in llama.cpp as the spec does, an importance matrix reaches the
quantizer, bad plans are refused, and ``advise gguf:`` writes a plan whose file has the size it predicted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flipscope.errors import FlipscopeError

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it: see .ci/run)")

pytestmark = pytest.mark.e2e

CYCLE = ("Q8_0", "Q4_0", "Q5_1", "IQ4_NL", "Q5_0", "Q4_1")  # 32-blocks: every row of the bundled model fits


def _source() -> Path:
    from flipscope.models.gguf_file import resolve

    return resolve("smollm2-135m")


def _mixed_plan(tensors: list) -> dict[str, str]:  # type: ignore[type-arg]
    """Every quantizable tensor a type, ffn_down (rows of 1536) through the K-quants: a plan of eleven types."""
    ks = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
    plan = {}
    for i, t in enumerate(x for x in tensors if x.quantizable):
        plan[t.name] = ks[i % len(ks)] if t.row % 256 == 0 else CYCLE[i % len(CYCLE)]
    return plan


def _gguf_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    import sys

    from flipscope.cli import main

    monkeypatch.setattr(sys, "argv", ["flipscope", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_plan_file_has_its_types_its_counted_size_and_runs_in_llama_cpp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gguf

    import flipscope
    from flipscope.compress.ggml_plan import write_ggml_plan
    from flipscope.compress.gguf_types import total_bits
    from flipscope.models.gguf_quantize import tensors_of

    source = tensors_of(_source())
    plan = _mixed_plan(source)
    path = write_ggml_plan(tmp_path / "plan.json", plan)
    out = tmp_path / "advised.gguf"
    code, said = _gguf_cli(monkeypatch, capsys, "compress", f"gguf:smollm2-135m+ggml:plan={path}", "--out", str(out))
    assert code == 0, said
    written = tensors_of(out)
    assert {t.name: t.qtype for t in written if t.name in plan} == plan
    counted = total_bits(source, plan)  # flipscope's count, from the source's shapes and the plan alone
    reader = gguf.GGUFReader(str(out))
    assert counted == 8 * sum(int(t.n_bytes) for t in reader.tensors)
    start = min(int(t.data_offset) for t in reader.tensors)
    padded = sum(-(-int(t.n_bytes) // reader.alignment) * reader.alignment for t in reader.tensors)
    assert out.stat().st_size == start + padded  # the file: its header, then every tensor aligned
    weights = sum(t.weights for t in source)
    assert f"{counted / weights:.4f} bits per weight" in said and f"use it as gguf:{out}" in said
    corpus = tmp_path / "text.txt"
    from flipscope.tasks.corpus import calibration_text

    corpus.write_text(calibration_text()[:8_000])
    result = flipscope.kld("gguf:smollm2-135m", [f"+ggml:plan={path}", f"gguf:{out}"], corpus=str(corpus), ctx=128,
                           max_windows=2, out=tmp_path / "kld", cache_dir=tmp_path / "cache")  # fmt: skip
    by_spec = result.summary[f"gguf:smollm2-135m+ggml:plan={path}"].kl_mean.value
    by_file = result.summary[f"gguf:{out}"].kl_mean.value
    assert 0 < by_spec == by_file  # the spec and the written file are the same weights in llama.cpp


def test_the_importance_matrix_reaches_llama_cpp(tmp_path: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from flipscope.compress.ggml import GGMLConfig
    from flipscope.compress.ggml_plan import write_ggml_plan
    from flipscope.compress.imatrix import Imatrix, write_imatrix
    from flipscope.models.gguf_quantize import file_for

    name = "blk.2.ffn_down.weight"  # rows of 1536: Q4_K
    plan = write_ggml_plan(tmp_path / "plan.json", {name: "Q4_K"})
    importance = np.full(1536, 1e-3)
    importance[::7] = 1e3  # a few columns matter a million times more
    matrix = write_imatrix(tmp_path / "m.imatrix.gguf", Imatrix({name: importance * 10}, {name: 10.0}))

    def weights(path: Path) -> np.ndarray:
        (t,) = [t for t in GGUFReader(str(path)).tensors if t.name == name]
        return np.asarray(dequantize(np.asarray(t.data), t.tensor_type), np.float64).reshape(-1, 1536)

    original = weights(_source())
    plain = weights(file_for(_source(), GGMLConfig.parse(f"plan={plan}")))
    weighted = weights(file_for(_source(), GGMLConfig.parse(f"plan={plan},imatrix={matrix}")))

    def error(w: np.ndarray) -> float:
        return float((importance * (w - original) ** 2).sum())

    assert error(weighted) < 0.85 * error(plain)  # the quantizer weighed the columns the matrix says matter


def test_bad_plans_are_refused_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flipscope.compress.ggml_plan import write_ggml_plan
    from flipscope.models import load_backend, parse_spec

    stray = write_ggml_plan(tmp_path / "stray.json", {"blk.99.attn_q.weight": "Q8_0"})
    code, said = _gguf_cli(monkeypatch, capsys, "compress", f"gguf:smollm2-135m+ggml:plan={stray}", "--out",
                           str(tmp_path / "x.gguf"))  # fmt: skip
    assert code != 0 and "does not have (e.g. 'blk.99.attn_q.weight')" in said and "Traceback" not in said
    assert not (tmp_path / "x.gguf").exists()
    shape = write_ggml_plan(tmp_path / "shape.json", {"blk.0.attn_q.weight": "Q4_K"})
    with pytest.raises(FlipscopeError, match=r"rows of 576 weights, not whole blocks of Q4_K"):
        load_backend(parse_spec(f"gguf:smollm2-135m+ggml:plan={shape}"))
    with pytest.raises(FlipscopeError, match=r"applies to gguf: models only"):
        load_backend(parse_spec(f"bundled:smollm2-135m+ggml:plan={shape}"))


def test_advise_gguf_writes_a_plan_whose_file_has_the_size_it_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flipscope.compress.gguf_types import total_bits
    from flipscope.compress.imatrix import read_imatrix
    from flipscope.models.gguf_quantize import tensors_of

    plan = tmp_path / "plan.json"
    code, said = _gguf_cli(monkeypatch, capsys, "advise", "gguf:smollm2-135m", "--types", "Q4_0,Q4_K,Q8_0", "--by",
                           "module", "--chunks", "1", "--ctx", "128", "--eval-windows", "0:1", "--size-of", "Q4_K_M",
                           "--imatrix", "calibration", "--out", str(plan))  # fmt: skip
    assert code == 0, said
    doc = json.loads(plan.read_text())
    source = tensors_of(_source())
    assert set(doc["tensors"]) == {t.name for t in source if t.quantizable}
    assert doc["bits_per_weight"] <= doc["budget_bpw"] and doc["size_of"] == "Q4_K_M"
    assert doc["calibration"]["windows"] == [0] and doc["evaluation"]["windows"] == [0]
    matrix = read_imatrix(Path(doc["imatrix"]["file"]))  # computed on the calibration windows, one per blk Linear
    assert len(matrix.sums) == sum(t.quantizable and t.name.startswith("blk.") for t in source)
    assert "llama.cpp Q4_K_M:" in said and "plan − it" in said
    out = tmp_path / "advised.gguf"
    code, said = _gguf_cli(monkeypatch, capsys, "compress", f"gguf:smollm2-135m+ggml:plan={plan}", "--out", str(out))
    assert code == 0, said
    written = tensors_of(out)
    weights = sum(t.weights for t in written)
    assert total_bits(written) / weights == pytest.approx(doc["bits_per_weight"], abs=1e-12)
    assert {t.name: t.qtype for t in written if t.name in doc["tensors"]} == doc["tensors"]
    # the plan was measured in a transformers twin with llama.cpp's dequantized blocks swapped in; the file itself,
    # run by llama.cpp on the same evaluation window, must show the same KL (a wrong tensor-name mapping, a missed
    # query/key permutation or an untied embedding would not): within the engines' floor
    import flipscope

    engine = flipscope.kld("gguf:smollm2-135m", [f"gguf:{out}"], corpus="olmo:coqa+drop", ctx=128, max_windows=1,
                           out=tmp_path / "kld", cache_dir=tmp_path / "cache")  # fmt: skip
    assert engine.summary[f"gguf:{out}"].kl_mean.value == pytest.approx(doc["eval_kl"], rel=0.25, abs=0.01)
    from flipscope.runs import advise_gguf

    measure: Any = advise_gguf.single_unit

    def from_cache(*args: Any, **kwargs: Any) -> Any:
        def measured_again() -> None:
            raise AssertionError("sensitivities measured again")

        return measure(*args[:3], measured_again, *args[4:], **kwargs)

    monkeypatch.setattr(advise_gguf, "single_unit", from_cache)  # a second budget reads them from the cache
    again = ["advise", "gguf:smollm2-135m", "--types", "Q4_0,Q4_K,Q8_0", "--by", "module", "--chunks", "1", "--ctx",
             "128", "--eval-windows", "0:1", "--target-bpw", "7", "--out", str(tmp_path / "seven.json")]  # fmt: skip
    code, said = _gguf_cli(monkeypatch, capsys, *again, "--imatrix", str(doc["imatrix"]["file"]))
    assert code == 0, said
    assert 6.5 < json.loads((tmp_path / "seven.json").read_text())["bits_per_weight"] <= 7
    with pytest.raises(AssertionError, match="measured again"):  # without the imatrix: other weights, measured
        _gguf_cli(monkeypatch, capsys, *again)
    code, said = _gguf_cli(monkeypatch, capsys, "advise", "gguf:smollm2-135m", "--target-bits", "4", "--out",
                           str(tmp_path / "x.json"))  # fmt: skip
    assert code != 0 and "--target-bits is for RTN plans" in said


def test_a_failed_quantization_quotes_llama_cpp_and_puts_its_log_back(tmp_path: Path) -> None:
    import ctypes

    import llama_cpp

    from flipscope.models.gguf_quantize import QuantizeJob, quantized

    def current() -> int | None:
        callback, data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(callback), ctypes.byref(data))
        return ctypes.cast(callback, ctypes.c_void_p).value

    before = current()
    with pytest.raises(FlipscopeError, match=r"could not quantize .* requires an imatrix"):
        quantized(_source(), QuantizeJob("IQ2_XXS"))  # llama.cpp refuses IQ2 without an importance matrix
    assert current() == before


def test_gguf_names_map_to_the_modules_holding_their_weights() -> None:
    """Each quantizable GGUF tensor maps to the transformers module whose weight it is, checked by value (the
    Frobenius norm, which llama.cpp's query/key row permutation leaves alone): two same-shaped tensors swapped —
    types measured on one module written to the other tensor — would pass the twin-against-engine check above when
    the plan gives both the same type, and fail here."""
    import gguf

    from flipscope.models import load_backend, parse_spec
    from flipscope.models.gguf_quantize import tensors_of
    from flipscope.runs.advise_gguf import _hf_names

    model = load_backend(parse_spec("bundled:smollm2-135m")).model  # type: ignore[attr-defined]
    hf = _hf_names(model, tensors_of(_source()), "gguf:smollm2-135m")
    stored = {t.name: t for t in gguf.GGUFReader(_source()).tensors}
    assert len(hf) == sum(t.quantizable for t in tensors_of(_source())) > 100
    for name, module in hf.items():
        values = gguf.quants.dequantize(stored[name].data, stored[name].tensor_type).astype(np.float64)
        weight = model.get_submodule(module).weight.detach().double().numpy()
        assert values.size == weight.size and np.linalg.norm(values) == pytest.approx(np.linalg.norm(weight),
                                                                                       rel=2e-3), name  # fmt: skip
