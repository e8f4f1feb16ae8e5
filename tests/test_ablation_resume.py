"""Ablations from the first changed block on (attribution/resume.py): the same per-window KL as the full forward,
captured on the baseline's weights, checked once per model, and the full forward wherever resuming would be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def deep_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four blocks: a capture taken with a changed block's weights, or an input taken from the wrong block, shows."""
    return make_tiny_llama(tmp_path_factory.mktemp("deep-llama"), layers=4)


def _corpus(tmp_path: Path) -> str:
    path = tmp_path / "text.txt"
    path.write_text("The planets circle the sun. Paris is the capital of France. Water boils at one hundred. " * 60)
    return str(path)


def _session(model: Path, tmp_path: Path, *, resume: bool) -> tuple[Any, list[str]]:
    from flipscope.attribution.ablate import capture_compression
    from flipscope.display import NullDisplay
    from flipscope.models import parse_spec
    from flipscope.runs.attribute import AblationSettings, open_session

    settings = AblationSettings(corpus=_corpus(tmp_path), chunks=4, ctx=64, device="cpu", batch=2,
                                cache_dir=str(tmp_path), resume=resume)  # fmt: skip
    session = open_session(parse_spec(f"hf:{model}"), settings, NullDisplay())
    changed = capture_compression(session.bank, parse_spec(f"hf:{model}+rtn:w2g16"), session.backend)
    return session, changed


def _in(changed: list[str], *blocks: int, first: int | None = None) -> list[str]:
    names = [n for n in changed if any(f".layers.{b}." in n for b in blocks)]
    return names[:first] if first else names


def _ablations(changed: list[str]) -> list[list[str]]:
    """Block 1 first (the capture), then block 2: a capture taken with block 1's candidate weights would give block 2
    a wrong input; then two blocks, the first block (the full forward), the last, and block 1 again (reused)."""
    return [_in(changed, 1, first=2), _in(changed, 2), _in(changed, 1, 3), _in(changed, 0, first=1),
            _in(changed, 3), _in(changed, 1, first=2)]  # fmt: skip


def _measure(session: Any, ablations: list[list[str]]) -> list[tuple[float, ...]]:
    out = []
    for names in ablations:
        session.bank.use(dict.fromkeys(names, "candidate"))
        out.append(session.meter().kl)
    return out


def test_an_ablation_from_its_first_block_measures_what_the_full_forward_does(deep_llama: Path, tmp_path: Path) -> None:
    """Batches of 2 windows, so the captured calls must line up with the meter's."""
    runs = {}
    for resume in (False, True):
        session, changed = _session(deep_llama, tmp_path, resume=resume)
        runs[resume] = _measure(session, _ablations(changed))
        if resume:
            inputs = session.meter.inputs
            assert inputs is not None and inputs.usable and len(inputs.inputs) == 2  # 4 windows / 2 per call
        session.close()
    for full, resumed in zip(runs[False], runs[True], strict=True):
        assert resumed == pytest.approx(full, rel=1e-6, abs=1e-12)
    assert runs[True][0] != pytest.approx(runs[True][1])  # the ablations differ: the check has power


def _share_state(writer: Any, reader: Any, *, kept: bool) -> None:
    """``writer`` leaves a value that ``reader`` adds to its output (taken, or kept for the next call)."""
    shared: dict[str, Any] = {}
    writer.register_forward_hook(lambda m, a, out: shared.__setitem__("x", out[..., :1].clone()))
    take = shared.get if kept else shared.pop
    reader.register_forward_hook(lambda m, args, out: out + take("x"))  # read inside the block


@pytest.mark.parametrize(("kept", "refused"), [(False, "fails (KeyError"), (True, "more than the hidden states")])
def test_a_decoder_passing_other_state_between_blocks_runs_the_full_forward(
    deep_llama: Path, tmp_path: Path, kept: bool, refused: str
) -> None:
    """Block 0 leaves a value that the last block reads (as Gemma 3n's shared key/value stores do): passing block 0
    through leaves the last block without it (an error) or with a stale one (wrong numbers). The check made at
    capture sees either and the meter measures with the full forward — the same numbers as without resuming."""
    runs = {}
    for resume in (False, True):
        session, changed = _session(deep_llama, tmp_path, resume=resume)
        layers = session.backend.model.get_decoder().layers
        _share_state(layers[0], layers[3], kept=kept)
        runs[resume] = _measure(session, _ablations(changed))
        if resume:
            assert session.meter.inputs is not None and not session.meter.inputs.usable
            assert refused in str(session.meter.inputs.refused)
        session.close()
    for full, resumed in zip(runs[False], runs[True], strict=True):
        assert resumed == pytest.approx(full, rel=1e-6, abs=1e-12)


def test_block_inputs_over_the_budget_run_the_full_forward_and_are_not_captured_again(
    deep_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flipscope.attribution import resume

    monkeypatch.setattr(resume, "BUDGET_BYTES", 1000)
    session, changed = _session(deep_llama, tmp_path, resume=True)
    inputs = session.meter.inputs
    captures = []
    original = inputs._capturing
    monkeypatch.setattr(inputs, "_capturing", lambda: captures.append(1) or original())
    got = _measure(session, _ablations(changed))
    assert not inputs.usable and "GiB" in str(inputs.refused) and inputs.inputs == []
    assert len(captures) == 1  # refused once, remembered
    session.close()
    session, changed = _session(deep_llama, tmp_path, resume=False)
    full = _measure(session, _ablations(changed))
    np.testing.assert_allclose(np.array(got), np.array(full), rtol=1e-6, atol=1e-12)
    session.close()


def test_a_weight_held_inside_and_outside_the_blocks_is_not_resumed(deep_llama: Path) -> None:
    """Parameters, not modules, say where a change lies: a weight shared by a later block and an earlier one (or by
    a module outside the blocks) makes the earliest holder the first changed block, or the full forward."""
    import torch

    from flipscope.attribution.resume import BlockInputs
    from flipscope.models import LoadOptions, load_backend, parse_spec

    model = load_backend(parse_spec(f"hf:{deep_llama}"), LoadOptions(device="cpu")).model  # type: ignore[attr-defined]
    layers = model.get_decoder().layers
    shared = layers[3].self_attn.q_proj
    layers[1].self_attn.q_proj.weight = shared.weight  # block 1 and block 3 share one weight (another module)
    inputs = BlockInputs(model)
    assert inputs.first_block([shared]) == 1
    assert inputs.first_block([layers[2].mlp.up_proj]) == 2
    tied = torch.nn.Linear(4, 4)
    model.extra = tied
    layers[2].mlp.extra = torch.nn.Linear(4, 4)
    layers[2].mlp.extra.weight = tied.weight  # held outside the blocks too
    assert BlockInputs(model).first_block([layers[2].mlp.extra]) is None
    assert BlockInputs(model).first_block([]) is None


def test_a_compression_that_changes_weights_outside_the_linear_layers_is_refused(tiny_llama: Path) -> None:
    """AWQ folds its scales into the norms: swapping the Linear weights alone would not be its model."""
    import torch

    from flipscope.attribution.ablate import WeightBank
    from flipscope.errors import FlipscopeError
    from flipscope.models import LoadOptions, load_backend, parse_spec

    model = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions(device="cpu")).model  # type: ignore[attr-defined]
    bank = WeightBank(model)
    norm = model.get_decoder().layers[0].input_layernorm

    def fold() -> None:
        with torch.no_grad():
            norm.weight.mul_(2.0)
            model.get_decoder().layers[0].self_attn.q_proj.weight.div_(2.0)

    with pytest.raises(FlipscopeError, match="input_layernorm"):
        bank.capture("folded", fold)


def test_a_session_given_another_bank_measures_through_it(deep_llama: Path, tmp_path: Path) -> None:
    """``advise gguf:`` swaps weights through a bank of its own: the meters must follow it, or they would never
    see a change and never resume."""
    from flipscope.attribution.ablate import WeightBank

    session, _ = _session(deep_llama, tmp_path, resume=True)
    model = session.backend.model
    bank = WeightBank(model, {"model.layers.2.mlp.up_proj": model.get_submodule("model.layers.2.mlp.up_proj")})
    session.use_bank(bank)
    assert session.meter.bank is bank
    assert session.meter.inputs.first_block(bank.changed()) is None  # nothing changed yet
    bank.add("zeros", {"model.layers.2.mlp.up_proj": bank.baseline["model.layers.2.mlp.up_proj"] * 0})
    bank.use({"model.layers.2.mlp.up_proj": "zeros"})
    assert session.meter.inputs.first_block(bank.changed()) == 2
    resumed = session.meter().kl
    session.close()
    full, _ = _session(deep_llama, tmp_path, resume=False)
    zeros = full.bank.baseline["model.layers.2.mlp.up_proj"] * 0
    full.bank.add("zeros", {"model.layers.2.mlp.up_proj": zeros})
    full.bank.use({"model.layers.2.mlp.up_proj": "zeros"})
    assert resumed == pytest.approx(full.meter().kl, rel=1e-6, abs=1e-12)
    full.close()
