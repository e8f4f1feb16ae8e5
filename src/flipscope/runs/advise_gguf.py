"""``flipscope advise gguf:BASE.gguf``: per-tensor llama.cpp types under a size budget. Each type's weights come from
llama.cpp's own quantizer (one whole-file quantization per type, every quantizable tensor forced to it, with the
importance matrix if any; a tensor whose rows are not whole blocks of the type gets what llama.cpp stores instead),
read back through transformers' GGUF loader into the file's transformers twin, and each (unit, type) is measured
alone against the cached baseline store, as ``advise`` measures RTN widths: the same session, weight bank, windows,
single-unit loop and knapsack. Sizes are counted as llama.cpp stores each type (block scales included); the budget
is bits per weight or the tensor data of llama.cpp's own file of a type (``--size-of Q4_K_M``), over every tensor
of the file (the file adds its metadata and up to 31 bytes of alignment per tensor).

Fitted on the calibration windows (sensitivities and a computed importance matrix), judged on the evaluation
windows: the plan's KL there beside the recipe's (``--size-of``) on the same windows, paired by window."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from flipscope.attribution.ablate import WeightBank, WindowKL
from flipscope.attribution.knapsack import least_value
from flipscope.attribution.sensitivity import Candidate, cache_file, single_unit
from flipscope.attribution.units import Unit, UnitKind, check_span, make_units
from flipscope.compress.ggml_plan import write_ggml_plan
from flipscope.compress.gguf_types import FTYPE, PLAN_TYPES, TensorInfo, check_type, tensor_bytes, total_bits
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics.windows import WindowDifference, paired_by_window
from flipscope.models import parse_spec
from flipscope.runs.attribute import AblationSettings, Session, open_session
from flipscope.tasks.corpus import CALIBRATION_CORPUS, HELD_OUT_CORPUS

log = logging.getLogger(__name__)

DEFAULT_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")


@dataclass(frozen=True, kw_only=True)
class GGUFAdviseSettings:
    types: tuple[str, ...] = DEFAULT_TYPES
    target_bpw: float | None = None  # bits per weight over every tensor of the file
    size_of: str | None = None  # or: the tensor bits of llama.cpp's own file of this type (Q4_K_M, …)
    imatrix: str | None = None  # an importance matrix file (llama.cpp's formats) used for every quantization
    compute_imatrix: bool = False  # or: one computed on the calibration windows, written beside the plan
    by: UnitKind = UnitKind.LINEAR
    span: int | None = None
    ablation: AblationSettings = field(default_factory=AblationSettings)
    eval_corpus: str | None = HELD_OUT_CORPUS
    eval_windows: tuple[int, int] = (0, 8)


@dataclass
class GGUFAdvice:
    plan: Path
    bits_per_weight: float  # of the planned file: every tensor's bits / every weight
    budget_bpw: float
    predicted_kl: float  # Σ single-unit calibration KLs
    calibration_kl: float
    eval_kl: float
    types: dict[str, int]  # type → tensors of it in the plan
    imatrix: Path | None = None
    recipe: str | None = None  # the --size-of file type
    recipe_bpw: float | None = None
    recipe_eval_kl: float | None = None
    difference: WindowDifference | None = None  # plan − recipe on the evaluation windows, paired by window
    units: int = 0
    seconds: float = 0.0


def _twin(location: str) -> str:
    """The transformers spec with the same weights as ``gguf:location``: the bundled model, or the file converted."""
    from flipscope.models.bundled import BUNDLED, transformers_twin
    from flipscope.models.gguf_file import resolve

    if location in BUNDLED:
        return f"bundled:{location}"
    return f"hf:{transformers_twin(resolve(location))}"


def _hf_names(model: Any, tensors: list[TensorInfo], source: str) -> dict[str, str]:
    """GGUF tensor name → transformers module name, for every tensor llama.cpp quantizes."""
    import torch
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    mapping = get_gguf_hf_weights_map(model, TensorProcessor())
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    missing: list[str] = []
    for t in tensors:
        hf = mapping.get(t.name) if t.quantizable else None
        module = modules.get(hf.removesuffix(".weight")) if hf and hf.endswith(".weight") else None
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding) and len(t.shape) == 2:
            out[t.name] = hf.removesuffix(".weight") if hf else ""
        elif t.quantizable:
            missing.append(t.name)  # unmapped, or a weight held other than as a Linear/Embedding (experts, Conv1D)
    if missing:
        raise FlipscopeError(f"{source}: {len(missing)} tensor(s) llama.cpp quantizes are not a Linear or Embedding "
                             f"weight of the transformers model (e.g. {missing[0]})",
                             fix="advise a dense model transformers loads from GGUF as Linear layers")  # fmt: skip
    return out


@dataclass(frozen=True)
class _Version:
    """One whole-file quantization: its file and each tensor's stored type."""

    path: Path
    types: dict[str, str]


def _quantize_all(source: Path, qtype: str, imatrix: Path | None) -> _Version:
    from flipscope.models.gguf_quantize import QuantizeJob, quantized, tensors_of

    path = quantized(source, QuantizeJob(FTYPE.get(qtype, "Q8_0"), ((".", qtype),), imatrix))
    return _Version(path, {t.name: t.qtype for t in tensors_of(path)})


def _load_version(bank: WeightBank, name: str, version: _Version, hf: dict[str, str], model: Any) -> None:
    """A quantized file's tensors, dequantized and mapped by transformers, kept in the bank as version ``name``."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from flipscope.models.hf_common import quiet_transformers

    quiet_transformers()
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # its own progress bar; flipscope's display shows the step
        loaded = load_gguf_checkpoint(str(version.path), return_tensors=True, model_to_load=model)["tensors"]
    bank.add(name, {module: loaded[module + ".weight"] for module in hf.values()})


def _checked(baseline: str, settings: GGUFAdviseSettings) -> tuple[Any, Path, tuple[str, ...]]:
    """The spec, its file and the types, refused before anything is loaded where they cannot work."""
    from flipscope.models.gguf_file import UNQUANTIZED, file_type, require_llama_cpp, resolve

    if (settings.target_bpw is None) == (settings.size_of is None):
        raise FlipscopeError("give exactly one budget", fix="--target-bpw B (e.g. 4.8) or --size-of Q4_K_M")
    if settings.imatrix and settings.compute_imatrix:
        raise FlipscopeError("give --imatrix FILE or --imatrix calibration, not both")
    types = tuple(dict.fromkeys(check_type(t, "--types") for t in settings.types))
    check_span(settings.by, settings.span)
    spec = parse_spec(baseline)
    if spec.source != "gguf" or spec.compression:
        raise FlipscopeError(f"{baseline}: advise gguf: takes an unquantized GGUF file",
                             fix="e.g. gguf:smollm2-135m or gguf:model-F16.gguf")  # fmt: skip
    source = resolve(spec.location)
    current = file_type(source)
    if current is not None and current not in UNQUANTIZED:
        raise FlipscopeError(f"{source.name} is already quantized (file type {current}): advice starts from the "
                             "unquantized weights", fix="give an F32/F16/BF16 GGUF")  # fmt: skip
    if settings.size_of and not hasattr(require_llama_cpp(), f"LLAMA_FTYPE_MOSTLY_{settings.size_of.upper()}"):
        raise FlipscopeError(f"--size-of {settings.size_of}: llama.cpp has no such file type",
                             fix="e.g. Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0")  # fmt: skip
    return spec, source, types


def advise_gguf(baseline: str, settings: GGUFAdviseSettings, *, out: str | Path,
                display: Display | None = None) -> GGUFAdvice:  # fmt: skip
    from flipscope.models.gguf_quantize import QuantizeJob, quantized, tensors_of

    spec, source, types = _checked(baseline, settings)
    shown = display or NullDisplay()
    started = time.monotonic()
    tensors = tensors_of(source)
    ablation = replace(settings.ablation, corpus=settings.ablation.corpus or CALIBRATION_CORPUS)
    first, end = settings.eval_windows
    session = open_session(parse_spec(_twin(spec.location)), ablation, shown,
                           evaluation=(settings.eval_corpus or ablation.corpus, first, end - first))  # fmt: skip
    try:
        model = session.backend.model
        hf = _hf_names(model, tensors, baseline)
        bank = WeightBank(model, {m: model.get_submodule(m) for m in hf.values()})
        session.use_bank(bank)
        imatrix = _imatrix(settings, session, hf, Path(out))
        versions: dict[str, _Version] = {}
        with shown.progress("llama.cpp quantizations", len(types)) as advance:
            for qtype in types:
                versions[qtype] = _quantize_all(source, qtype, imatrix)
                _load_version(bank, qtype, versions[qtype], hf, model)
                advance(1)
        fixed = total_bits([t for t in tensors if t.name not in hf])
        weights = sum(t.weights for t in tensors)
        recipe_version = None
        if settings.size_of:
            path = quantized(source, QuantizeJob(settings.size_of.upper(), (), imatrix))
            recipe_version = _Version(path, {t.name: t.qtype for t in tensors_of(path)})
            budget = float(total_bits(tensors_of(path)))
        else:
            budget = float(settings.target_bpw or 0.0) * weights
        planned = [t for t in tensors if t.name in hf]
        units = make_units([(hf[t.name], t.weights) for t in planned], settings.by, span=settings.span)
        cache = _cache_file(source, types, imatrix, settings, session)
        found = single_unit(units, _candidates(versions, {hf[t.name]: t for t in planned}, types), bank,
                            session.meter, shown, fix="offer more --types (Q8_0), or run in float32",
                            cache=cache)  # fmt: skip
        choice = least_value(found.options, budget - fixed)
        if choice is None:
            cheapest = (fixed + sum(min(o.cost for o in r) for r in found.options)) / weights
            raise FlipscopeError(f"no plan fits the budget ({budget / weights:.4f} bits per weight; the fewest "
                                 f"possible: {cheapest:.4f})",
                                 fix="raise the budget, or add lower --types")  # fmt: skip
        chosen = {m: kept[c] for unit, kept, c in zip(units, found.offered, choice.picks, strict=True)
                  for m in unit.linears}  # fmt: skip
        module_of = {m: n for n, m in hf.items()}
        plan = {module_of[m]: versions[q].types[module_of[m]] for m, q in chosen.items()}
        bank.use(chosen)
        calibration, evaluation = session.meter(), _evaluate(session)
        for got, where in ((calibration, "calibration"), (evaluation, "evaluation")):
            if got.bad:
                raise FlipscopeError(f"the plan gives NaN or infinite KL in {where} windows {got.bad}",
                                     fix="offer more --types (Q8_0), or run in float32")  # fmt: skip
        result = GGUFAdvice(Path(out), (fixed + choice.cost) / weights, budget / weights, choice.value,
                            calibration.mean, evaluation.mean, dict(Counter(plan.values())), imatrix,
                            units=len(units))  # fmt: skip
        if recipe_version is not None:
            _load_version(bank, "recipe", recipe_version, hf, model)
            bank.use(dict.fromkeys(hf.values(), "recipe"))
            recipe = _evaluate(session)
            result.recipe, result.recipe_bpw = settings.size_of, budget / weights
            if not recipe.bad:
                result.recipe_eval_kl = recipe.mean
                result.difference = paired_by_window(np.asarray(evaluation.windows), np.asarray(evaluation.kl),
                                                     np.asarray(recipe.kl))  # fmt: skip
        record = {"file": str(imatrix.resolve()), "sha256": _sha(imatrix)} if imatrix else None
        write_ggml_plan(
            Path(out), plan, made_by="flipscope advise", baseline=spec.label(), source_sha256=_sha(source),
            by=str(settings.by), span=settings.span, types=list(types), bits_per_weight=result.bits_per_weight,
            budget_bpw=result.budget_bpw, size_of=settings.size_of, imatrix=record,
            calibration=session.windows.record(), evaluation=_eval_windows(session), ctx=ablation.ctx,
            predicted_kl=choice.value, calibration_kl=calibration.mean, eval_kl=evaluation.mean,
            eval_per_window=list(evaluation.kl), recipe_eval_kl=result.recipe_eval_kl, sensitivity=found.table,
            refused=found.refused,
        )  # fmt: skip
    finally:
        session.close()
    result.seconds = time.monotonic() - started
    return result


def _candidates(versions: dict[str, _Version], tensor_of: dict[str, TensorInfo], types: tuple[str, ...]
                ) -> Callable[[Unit], list[Candidate]]:  # fmt: skip
    """A unit's candidates: each type, at the exact bits of what llama.cpp stored for its tensors; a type whose
    stored types repeat an earlier type's (llama.cpp's fallbacks: Q2_K and Q3_K both Q4_0 on rows of 576) is
    offered once."""

    def offer(unit: Unit) -> list[Candidate]:
        out, seen = [], set()
        for qtype in types:
            stored = tuple(versions[qtype].types[tensor_of[m].name] for m in unit.linears)
            if stored not in seen:
                seen.add(stored)
                cost = sum(8 * tensor_bytes(s, tensor_of[m].shape) for m, s in zip(unit.linears, stored, strict=True))
                out.append(Candidate(qtype, qtype, cost))
        return out

    return offer


def _cache_file(source: Path, types: tuple[str, ...], imatrix: Path | None, settings: GGUFAdviseSettings,
                session: Session) -> Path:  # fmt: skip
    """Where sensitivities are kept, by everything that makes them (the file, the types, the imatrix, the units,
    the windows, the libraries): a second budget or --size-of re-measures nothing."""
    from flipscope.models.gguf_quantize import llama_version
    from flipscope.plumbing.version import library_versions

    key = {"source": _sha(source), "types": types, "by": str(settings.by),
           "imatrix": _sha(imatrix) if imatrix else None, "span": settings.span, "windows": session.windows.record(),
           "ablation": {k: getattr(settings.ablation, k) for k in ("ctx", "scored_fraction", "dtype", "batch")},
           "device": str(getattr(session.backend, "device", settings.ablation.device)),
           "versions": {**library_versions(), "llama_cpp_python": llama_version()}}  # fmt: skip
    return cache_file("gguf", key)


def _evaluate(session: Session) -> WindowKL:
    assert session.eval_meter is not None
    return session.eval_meter()


def _eval_windows(session: Session) -> dict[str, Any]:
    assert session.eval_windows is not None
    return session.eval_windows.record()


def _sha(path: Path) -> str:
    from flipscope.plumbing.cache import file_sha256

    return file_sha256(path)


def _imatrix(settings: GGUFAdviseSettings, session: Session, hf: dict[str, str], out: Path) -> Path | None:
    """The importance matrix every quantization uses: the file given, or one computed on the calibration windows
    (never the evaluation ones) and written beside the plan as ``PLAN.imatrix.gguf``."""
    if settings.imatrix:
        from flipscope.compress.imatrix import read_imatrix
        from flipscope.plumbing.cache import user_path

        path = user_path(settings.imatrix)
        read_imatrix(path)  # a clear error now, not inside llama.cpp
        return path
    if not settings.compute_imatrix:
        return None
    from flipscope.compress.imatrix import write_imatrix
    from flipscope.passes.imatrix import collect_imatrix

    windows = [w.ids for w in cast(Any, session.meter).plan.windows]
    device = str(getattr(session.backend, "device", "cpu"))
    matrix = collect_imatrix(session.backend.model, windows, {m: n for n, m in hf.items()}, device=device,
                             dataset=session.windows.corpus)  # fmt: skip
    return write_imatrix(out.with_suffix(".imatrix.gguf"), matrix)


__all__ = ["DEFAULT_TYPES", "PLAN_TYPES", "GGUFAdvice", "GGUFAdviseSettings", "advise_gguf"]
