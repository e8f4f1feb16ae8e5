"""Reproducible passes: cache keys hold what was resolved (device, hub revision), run directories are never shared
or overwritten, and a task's source is the one named."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from flipscope import compare
from flipscope.errors import FlipscopeError
from flipscope.models import LoadOptions
from flipscope.store.run_dir import claim_run_dir
from tests.conftest import Script
from tests.test_pipeline import answers


def test_auto_device_is_resolved_in_keys_and_run_json(scripts, mc_file: Path, tmp_path: Path) -> None:
    assert LoadOptions("auto").resolved().device == "cpu"  # no GPU here
    assert LoadOptions("cuda:1").resolved().device == "cuda:1"
    scripts["b"] = Script(answers({}))
    scripts["c"] = Script(answers({1: 2}))
    kwargs = {"tasks": [str(mc_file)], "cache_dir": tmp_path / "cache"}
    auto = compare("mock:b", ["mock:c"], device="auto", out=tmp_path / "a", **kwargs)
    cpu = compare("mock:b", ["mock:c"], device="cpu", out=tmp_path / "b", **kwargs)
    assert auto.run.settings.device == "cpu" and cpu.run.baseline.reused == {"planets": True}
    assert len(scripts["b"].calls) == 1  # "auto" and "cpu" are the same device here: one pass, reused
    compare("mock:b", ["mock:c"], device="meta", out=tmp_path / "c", **kwargs)
    assert len(scripts["b"].calls) == 2  # another device: computed again, never reused


def test_run_directories_are_never_shared_or_overwritten(
    scripts, mc_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = claim_run_dir(None), claim_run_dir(None)  # the same second
    assert first != second and first.is_dir() and second.is_dir()
    scripts["b"] = Script(answers({}))
    scripts["c"] = Script(answers({1: 2}))
    compare("mock:b", ["mock:c"], tasks=[str(mc_file)], out=tmp_path / "run", cache_dir=tmp_path / "cache")
    before = (tmp_path / "run" / "run.json").read_text()
    with pytest.raises(FlipscopeError, match="already exists and is not empty"):
        compare("mock:b", ["mock:c"], tasks=[str(mc_file)], out=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert (tmp_path / "run" / "run.json").read_text() == before


def test_hub_models_are_fingerprinted_by_resolved_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    from flipscope.models import fingerprint, parse_spec

    spec = parse_spec("hf:org/model")
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo: SimpleNamespace(sha="a" * 40))
    first = fingerprint(spec)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo: SimpleNamespace(sha="b" * 40))
    assert fingerprint(spec) != first  # the model changed on the hub: nothing cached is reused

    def offline(repo: str) -> None:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", offline)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: f"/hub/snapshots/{'c' * 40}")
    assert fingerprint(spec) != first  # offline: the revision the local hub cache holds

    def missing(repo: str, **kw: object) -> None:
        raise FileNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(FlipscopeError, match="cannot resolve which revision"):
        fingerprint(spec)


def test_batch_size_reaches_the_scorer_and_the_cache_key(tiny_llama: Path, mc_file: Path, tmp_path: Path) -> None:
    from flipscope.models import load_backend, parse_spec

    backend = load_backend(parse_spec(f"hf:{tiny_llama}"), LoadOptions("cpu", batch_size=3))
    assert backend.batch_size == 3  # type: ignore[attr-defined]
    backend.close()
    kwargs = {"tasks": [str(mc_file)], "cache_dir": tmp_path / "cache"}
    one = compare(f"hf:{tiny_llama}", ["+rtn:w8"], batch_size=1, out=tmp_path / "a", **kwargs)
    four = compare(f"hf:{tiny_llama}", ["+rtn:w8"], batch_size=4, out=tmp_path / "b", **kwargs)
    assert one.run.settings.batch_size == 1 and four.run.baseline.reused == {"planets": False}
    s1, s4 = one.summary[f"hf:{tiny_llama}+rtn:w8"]["planets"], four.summary[f"hf:{tiny_llama}+rtn:w8"]["planets"]
    assert s1.acc_baseline == s4.acc_baseline and s1.choice_kl_mean == pytest.approx(s4.choice_kl_mean, abs=1e-5)
