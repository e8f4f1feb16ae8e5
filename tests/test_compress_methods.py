"""Compression methods on small layers and the tiny Llama: error falls with bits, exact sparsity, identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipscope.compress import (
    METHODS,
    DropLayersConfig,
    GGMLConfig,
    MagnitudeConfig,
    NMConfig,
    NoiseConfig,
    RTNConfig,
    WandaConfig,
    apply_compression,
    config_from_dict,
    magnitude_mask,
    nm_mask,
    parse_method,
    wanda_mask,
)
from flipscope.errors import FlipscopeError


def tiny(path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def logits(model, text_ids):  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model(torch.tensor([text_ids])).logits


def linear_weights(model):  # type: ignore[no-untyped-def]
    import torch

    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize(
    "config",
    [
        RTNConfig(bits=3, group_size=64, symmetric=False, include_lm_head=True),
        GGMLConfig(qtype="Q5_1"),
        NoiseConfig(sigma=0.05, seed=2),
        MagnitudeConfig(sparsity=0.3),
        NMConfig(n=2, m=4),
        DropLayersConfig(layers=(0,)),
        WandaConfig(sparsity=0.25),
        parse_method("hqq:w3g32"),
        parse_method("bnb:int8,threshold=4"),
        parse_method("torchao:intx-w3g64"),
        parse_method("quanto:wint4"),
        parse_method("quanto:w8a8"),
    ],
)
def test_configs_round_trip_through_dicts_and_labels(config) -> None:  # type: ignore[no-untyped-def]
    assert config_from_dict(config.to_dict()) == config
    assert config.to_dict()["version"] == 1
    assert parse_method(config.label()) == config


def test_stored_config_of_another_version_is_refused() -> None:
    with pytest.raises(FlipscopeError, match="version 9"):
        config_from_dict({**RTNConfig().to_dict(), "version": 9})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ggml:Q3_K", "unknown ggml type"),
        ("noise:-1", "sigma must be ≥ 0"),
        ("noise:abc", "cannot read noise"),
        ("magnitude:1", "sparsity must be in"),
        ("magnitude:1.5", "sparsity must be in"),
        ("4:2", "0 < N < M"),
        ("drop:first2", "cannot read drop"),
        ("drop:last0", "invalid layer drop"),
        ("rtn:w1", "bits must be 2–8"),
        ("hqq:w5g64", "invalid hqq setting"),
        ("bnb:int4", "invalid bitsandbytes setting"),
        ("torchao:int4wo", "unknown torchao scheme"),
        ("quanto:wint3", "cannot read quanto arguments"),
        ("torchao:intx-w9g32", "unknown torchao scheme"),
    ],
)
def test_invalid_parameters_fail_at_parse_time(text: str, message: str) -> None:
    with pytest.raises(FlipscopeError, match=message):
        parse_method(text)


def test_every_method_is_listed_with_syntax() -> None:
    assert {"rtn", "ggml", "noise", "magnitude", "nm", "drop", "wanda"} <= set(METHODS)
    assert all(cls.syntax for cls in METHODS.values())


def test_ggml_error_falls_as_bits_rise(tiny_llama: Path) -> None:
    errors = {}
    base = linear_weights(tiny(tiny_llama))
    for qtype in ("Q4_0", "Q5_0", "Q8_0"):
        model = tiny(tiny_llama)
        stats = apply_compression(GGMLConfig(qtype=qtype), model)
        assert stats["library"].startswith("gguf ")
        new = linear_weights(model)
        errors[qtype] = sum(float((new[n] - base[n]).pow(2).sum()) for n in base if n != "lm_head")
        assert (new["lm_head"] == base["lm_head"]).all()
    assert errors["Q8_0"] < errors["Q5_0"] < errors["Q4_0"]


def test_noise_zero_is_the_identity_and_noise_scales_with_std(tiny_llama: Path) -> None:
    base = tiny(tiny_llama)
    same = tiny(tiny_llama)
    apply_compression(NoiseConfig(sigma=0.0), same)
    ids = [1, 5, 9, 12, 40]
    assert (logits(same, ids) == logits(base, ids)).all()
    noisy = tiny(tiny_llama)
    apply_compression(NoiseConfig(sigma=0.1, seed=1), noisy)
    w0, w1 = linear_weights(base), linear_weights(noisy)
    name = "model.layers.0.mlp.up_proj"
    ratio = float((w1[name] - w0[name]).std() / w0[name].std())
    assert ratio == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_magnitude_hits_the_sparsity_exactly(tiny_llama: Path, sparsity: float) -> None:
    model = tiny(tiny_llama)
    stats = apply_compression(MagnitudeConfig(sparsity=sparsity), model)
    for name, w in linear_weights(model).items():
        if name != "lm_head":
            assert int((w == 0).sum()) == round(sparsity * w.numel()), name
    assert stats["sparsity"] == pytest.approx(sparsity, abs=1e-3)


def test_magnitude_mask_drops_the_smallest() -> None:
    import torch

    w = torch.tensor([[0.1, -3.0, 0.2, 5.0], [-0.05, 1.0, -2.0, 0.3]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, False, True], [False, True, True, False]]


def test_two_four_pattern_is_exact(tiny_llama: Path) -> None:
    import torch

    w = torch.tensor([[0.1, -3.0, 0.2, 5.0, 1.0, 2.0, -3.0, 0.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, False, True, False, True, True, False]]
    model = tiny(tiny_llama)
    apply_compression(NMConfig(n=2, m=4), model)
    for name, weight in linear_weights(model).items():
        if name != "lm_head":
            groups = (weight != 0).reshape(weight.shape[0], -1, 4).sum(-1)
            assert bool((groups <= 2).all()) and int((weight == 0).sum()) >= weight.numel() // 2


def test_drop_layers_removes_blocks_and_the_model_still_scores(tiny_llama: Path) -> None:
    from flipscope.models import load_backend, parse_spec
    from flipscope.tasks import ScoreRequest

    backend = load_backend(parse_spec(f"hf:{tiny_llama}+drop:last1"))
    net = backend.model  # type: ignore[attr-defined]
    assert len(net.model.layers) == 1 and net.config.num_hidden_layers == 1
    assert backend.info.details["compression"]["drop:last1"]["dropped"] == [1]
    scores = backend.score([ScoreRequest("Header.\n\n", "Question: Mars?\nAnswer:", (" planet", " a red one"))])
    assert len(scores[0].logprobs) == 2 and all(v < 0 for v in scores[0].logprobs)
    with pytest.raises(FlipscopeError, match="does not fit a model of 2 blocks"):
        apply_compression(DropLayersConfig(layers=(0, 1)), tiny(tiny_llama))


@pytest.mark.parametrize(
    "suffix", ["+rtn:w4g16+drop:last1", "+rtn:w3g16,lm_head", "+2:4", "+gptq:w4g16,act", "+awq:w3g32"]
)
def test_saved_candidate_reloads_with_identical_outputs(tiny_llama: Path, tmp_path: Path, suffix: str) -> None:
    import json

    from flipscope import save_compressed
    from flipscope.models import load_backend, parse_spec

    spec = f"hf:{tiny_llama}{suffix}"
    folder = save_compressed(spec, tmp_path / "saved")
    record = json.loads((folder / "flipscope.json").read_text())
    assert record["spec"] == spec and record["compression"][0]["version"] == 1
    live = load_backend(parse_spec(spec)).model  # type: ignore[attr-defined]
    saved = load_backend(parse_spec(f"hf:{folder}")).model  # type: ignore[attr-defined]
    ids = [1, 7, 30, 2, 99, 4]
    assert bool((logits(live, ids) == logits(saved, ids)).all())
    with pytest.raises(FlipscopeError, match="not empty"):
        save_compressed(spec, folder)


def test_wanda_mask_weighs_magnitude_by_input_norm() -> None:
    import torch

    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    norms = torch.tensor([10.0, 1.0, 1.0, 0.1])  # scores 10, 2, 3, 0.4
    assert wanda_mask(w, norms, 0.5).tolist() == [[True, False, True, False]]
    assert magnitude_mask(w, 0.5).tolist() == [[False, False, True, True]]


def test_wanda_prunes_each_row_exactly_on_the_tiny_llama(tiny_llama: Path) -> None:
    from flipscope.models import load_backend, parse_spec
    from flipscope.tasks import ScoreRequest

    backend = load_backend(parse_spec(f"hf:{tiny_llama}+wanda:0.5"))
    stats = backend.info.details["compression"]["wanda:0.5"]
    assert stats["sparsity"] == pytest.approx(0.5) and "pydoc_data" in stats["calibration"]
    for name, w in linear_weights(backend.model).items():  # type: ignore[attr-defined]
        if name != "lm_head":
            assert bool(((w == 0).sum(dim=1) == w.shape[1] // 2).all()), name
    scores = backend.score([ScoreRequest("", "Question: Mars?\nAnswer:", (" planet", " a red one"))])
    assert all(v < 0 for v in scores[0].logprobs)
    with pytest.raises(FlipscopeError, match="tokenizer"):
        apply_compression(WandaConfig(sparsity=0.5), tiny(tiny_llama))


def test_hqq_error_falls_as_bits_rise(tiny_llama: Path) -> None:
    from flipscope.compress import HQQConfig

    base = linear_weights(tiny(tiny_llama))
    errors = []
    for bits in (2, 3, 4, 8):
        model = tiny(tiny_llama)
        stats = apply_compression(HQQConfig(bits=bits, group_size=64), model)
        assert stats["library"].startswith("hqq ")
        new = linear_weights(model)
        errors.append(sum(float((new[n] - base[n]).pow(2).sum()) for n in base if n != "lm_head"))
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 100


def test_missing_library_names_the_pip_line(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from flipscope.compress import HQQConfig

    monkeypatch.setitem(sys.modules, "hqq.core.quantize", None)  # import now fails as if not installed
    with pytest.raises(FlipscopeError, match=r"pip install hqq==0\.2\.8\.post1"):
        apply_compression(HQQConfig(bits=4, group_size=64), tiny(tiny_llama))


def test_bnb_quantizes_at_load_and_int8_moves_less_than_4bit(tiny_llama: Path) -> None:
    from flipscope.models import load_backend, parse_spec

    base = tiny(tiny_llama)
    ids = [1, 7, 30, 2, 99, 4, 18, 61]
    ref = logits(base, ids)
    moved = {}
    for kind, layer in (("int8", "Linear8bitLt"), ("nf4", "Linear4bit"), ("fp4", "Linear4bit")):
        backend = load_backend(parse_spec(f"hf:{tiny_llama}+bnb:{kind}"))
        net = backend.model  # type: ignore[attr-defined]
        assert type(net.model.layers[0].mlp.up_proj).__name__ == layer
        assert backend.info.details["compression"][f"bnb:{kind}"]["library"].startswith("bitsandbytes ")
        moved[kind] = float((logits(net, ids) - ref).abs().mean())
    assert 0 < moved["int8"] < moved["nf4"]
    assert moved["fp4"] > 0


def test_bnb_must_come_first_and_saves_as_a_prequantized_checkpoint(tiny_llama: Path, tmp_path: Path) -> None:
    """A bitsandbytes candidate saved by `flipscope compress` is a pre-quantized checkpoint that hf:DIR loads."""
    import json

    from flipscope import save_compressed
    from flipscope.models import load_backend, parse_spec

    with pytest.raises(FlipscopeError, match="must come first"):
        parse_spec(f"hf:{tiny_llama}+drop:last1+bnb:nf4")
    assert parse_spec(f"hf:{tiny_llama}+bnb:nf4+drop:last1").compression[0] == parse_method("bnb:nf4")
    live = load_backend(parse_spec(f"hf:{tiny_llama}+bnb:nf4"))
    folder = save_compressed(f"hf:{tiny_llama}+bnb:nf4", tmp_path / "nf4")
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["quant_method"] == "bitsandbytes"
    saved = load_backend(parse_spec(f"hf:{folder}"))
    assert saved.info.details["checkpoint_quantization"] == "bitsandbytes"
    assert saved.info.details["parameters"] == live.info.details["parameters"] == tiny(tiny_llama).num_parameters()
    ids = [1, 7, 30, 2, 99, 4]
    assert bool((logits(live.model, ids) == logits(saved.model, ids)).all())  # type: ignore[attr-defined]
    with pytest.raises(FlipscopeError, match="already bitsandbytes-quantized"):
        load_backend(parse_spec(f"hf:{folder}+bnb:int8"))


def test_checkpoint_whose_library_is_missing_names_the_pip_line(tiny_llama: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from flipscope.models import load_backend, parse_spec

    folder = tmp_path / "awq"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 32}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FlipscopeError, match=r"awq checkpoint; loading it needs gptqmodel — pip install gptqmodel"):
        load_backend(parse_spec(f"hf:{folder}"))


def test_bnb_missing_library_names_the_pip_line(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from flipscope.models import load_backend, parse_spec

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(FlipscopeError, match=r"pip install bitsandbytes==0\.50\.2"):
        load_backend(parse_spec(f"hf:{tiny_llama}+bnb:nf4"))


@pytest.mark.parametrize("scheme", ["int8wo", "w8a8-dyn", "float8wo", "intx-w4g32"])
def test_torchao_schemes_run_and_keep_the_head(tiny_llama: Path, scheme: str) -> None:
    from flipscope.compress import TorchAOConfig

    model = tiny(tiny_llama)
    ids = [1, 7, 30, 2, 99, 4]
    ref = logits(tiny(tiny_llama), ids)
    stats = apply_compression(TorchAOConfig(scheme=scheme), model)
    assert stats["library"].startswith("torchao ") and stats["layers"] == 14
    assert type(model.lm_head.weight).__name__ in ("Parameter", "Tensor")
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ not in ("Parameter", "Tensor")
    out = logits(model, ids)
    assert 0 < float((out - ref).abs().mean()) < float(ref.abs().mean())


def test_torchao_intx_error_falls_as_bits_rise(tiny_llama: Path) -> None:
    from flipscope.compress import TorchAOConfig

    ids = [1, 7, 30, 2, 99, 4]
    ref = logits(tiny(tiny_llama), ids)
    moved = []
    for bits in (2, 4, 8):
        model = tiny(tiny_llama)
        apply_compression(TorchAOConfig(scheme=f"intx-w{bits}g32"), model)
        moved.append(float((logits(model, ids) - ref).abs().mean()))
    assert moved[0] > moved[1] > moved[2]


def test_quanto_weights_error_falls_as_bits_rise_and_w8a8_is_calibrated(tiny_llama: Path) -> None:
    from flipscope.compress import QuantoConfig
    from flipscope.models import load_backend, parse_spec

    ids = [1, 7, 30, 2, 99, 4]
    ref = logits(tiny(tiny_llama), ids)
    moved = {}
    for weights in ("int2", "int4", "int8"):
        model = tiny(tiny_llama)
        stats = apply_compression(QuantoConfig(weights=weights), model)
        assert stats["library"].startswith("optimum-quanto ")
        assert type(model.lm_head).__name__ == "Linear"  # the head is left alone
        moved[weights] = float((logits(model, ids) - ref).abs().mean())
    assert moved["int2"] > moved["int4"] > moved["int8"] > 0
    from flipscope.tasks import ScoreRequest

    scored = load_backend(parse_spec(f"hf:{tiny_llama}+quanto:wint4")).score(
        [ScoreRequest("Header.\n\n", "Question: Mars?\nAnswer:", (" planet", " a red one"))]
    )  # through the real scorer: int4 weights must work there too
    assert all(v < 0 for v in scored[0].logprobs)
    backend = load_backend(parse_spec(f"hf:{tiny_llama}+quanto:w8a8"))
    assert "pydoc_data" in backend.info.details["compression"]["quanto:w8a8"]["calibration"]
    w8a8 = float((logits(backend.model, ids) - ref).abs().mean())  # type: ignore[attr-defined]
    assert 0 < w8a8 < moved["int2"]


def test_calibration_source_is_the_default_corpus_without_loading_tasks() -> None:
    import subprocess
    import sys

    from flipscope.compress.calibration import CALIBRATION_SOURCE
    from flipscope.tasks.corpus import DEFAULT_CORPUS

    assert CALIBRATION_SOURCE == DEFAULT_CORPUS  # written out in compress/calibration.py, not imported
    loaded = "import sys, flipscope.compress; print('flipscope.tasks' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True, check=True)
    assert result.stdout == "False\n"  # import flipscope.compress does not load the tasks (nor numpy through them)
