"""``flipscope advise gguf:BASE.gguf``: per-tensor llama.cpp types under a size budget. Each type's weights come from
llama.cpp's own quantizer (one whole-file quantization per type, every quantizable tensor forced to it, with the
importance matrix if any; a tensor whose rows are not whole blocks of the type gets what llama.cpp stores instead),
read back through transformers' GGUF loader into the file's transformers twin, and each (unit, type) is measured
alone against the cached baseline store, as ``advise`` measures RTN widths: the same session, weight bank, windows
and knapsack. Sizes are counted as llama.cpp stores each type (block scales included); the budget is bits per
weight or the tensor bits of llama.cpp's own file of a type (``--size-of Q4_K_M``), over every tensor of the file.

Fitted on the calibration windows (sensitivities and a computed importance matrix), judged on the evaluation
windows: the plan's KL there beside the recipe's (``--size-of``) on the same windows, paired by window."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from flipscope.attribution.ablate import WeightBank, WindowKL
from flipscope.attribution.knapsack import Option, least_value
from flipscope.attribution.units import Unit, UnitKind, check_span, make_units
from flipscope.compress.ggml_plan import write_ggml_plan
from flipscope.compress.gguf_types import FTYPE, PLAN_TYPES, TensorInfo, check_type, tensor_bytes, total_bits
from flipscope.display import Display, NullDisplay
from flipscope.errors import FlipscopeError
from flipscope.metrics.windows import WindowDifference, paired_by_window
from flipscope.models import parse_spec
from flipscope.plumbing.atomic import write_atomically
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
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    mapping = get_gguf_hf_weights_map(model, TensorProcessor())
    out: dict[str, str] = {}
    missing: list[str] = []
    for t in tensors:
        hf = mapping.get(t.name) if t.quantizable else None
        if hf:
            out[t.name] = hf.removesuffix(".weight")
        elif t.quantizable:
            missing.append(t.name)
    if missing:
        raise FlipscopeError(f"{source}: transformers maps no weight to {len(missing)} tensor(s) (e.g. {missing[0]})",
                             fix="advise a model architecture transformers loads from GGUF")  # fmt: skip
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


def advise_gguf(baseline: str, settings: GGUFAdviseSettings, *, out: str | Path,
                display: Display | None = None) -> GGUFAdvice:  # fmt: skip
    from flipscope.models.gguf_file import resolve
    from flipscope.models.gguf_quantize import QuantizeJob, quantized, tensors_of

    if (settings.target_bpw is None) == (settings.size_of is None):
        raise FlipscopeError("give exactly one budget", fix="--target-bpw B (e.g. 4.8) or --size-of Q4_K_M")
    if settings.imatrix and settings.compute_imatrix:
        raise FlipscopeError("give --imatrix FILE or --imatrix-corpus, not both")
    types = tuple(dict.fromkeys(check_type(t, "--types") for t in settings.types))
    check_span(settings.by, settings.span)
    spec = parse_spec(baseline)
    if spec.source != "gguf" or spec.compression:
        raise FlipscopeError(f"{baseline}: advise gguf: takes an unquantized GGUF file",
                             fix="e.g. gguf:smollm2-135m or gguf:model-F16.gguf")  # fmt: skip
    shown = display or NullDisplay()
    started = time.monotonic()
    source = resolve(spec.location)
    tensors = tensors_of(source)
    ablation = replace(settings.ablation, corpus=settings.ablation.corpus or CALIBRATION_CORPUS)
    first, end = settings.eval_windows
    session = open_session(parse_spec(_twin(spec.location)), ablation, shown,
                           evaluation=(settings.eval_corpus or ablation.corpus, first, end - first))  # fmt: skip
    try:
        model = session.backend.model
        hf = _hf_names(model, tensors, baseline)
        bank = WeightBank(model, {m: model.get_submodule(m) for m in hf.values()})
        session.bank = bank
        imatrix = _imatrix(settings, session, hf, Path(out))
        versions: dict[str, _Version] = {}
        with shown.progress("llama.cpp quantizations", len(types)) as advance:
            for qtype in types:
                versions[qtype] = _quantize_all(source, qtype, imatrix)
                _load_version(bank, qtype, versions[qtype], hf, model)
                advance(1)
        planned = [t for t in tensors if t.name in hf]
        fixed = total_bits([t for t in tensors if t.name not in hf])
        weights = sum(t.weights for t in tensors)
        recipe_version = None
        if settings.size_of:
            path = quantized(source, QuantizeJob(settings.size_of.upper(), (), imatrix))
            recipe_version = _Version(path, {t.name: t.qtype for t in tensors_of(path)})
            budget = float(total_bits(tensors_of(path)))
        else:
            budget = float(settings.target_bpw or 0.0) * weights
        module_of = {m: n for n, m in hf.items()}
        sizes = {t.name: t for t in planned}
        units = make_units([(hf[t.name], t.weights) for t in planned], settings.by, span=settings.span)
        key = {"source": _sha(source), "types": types, "imatrix": _sha(imatrix) if imatrix else None,
               "by": str(settings.by), "span": settings.span, "windows": session.windows.record(),
               "ctx": ablation.ctx, "scored_fraction": ablation.scored_fraction, "dtype": ablation.dtype}  # fmt: skip
        measured = _Measure(session, bank, versions, module_of, types)
        options, offered, table = measured.all(units, sizes, shown, _cache_file(key))
        choice = least_value(options, budget - fixed)
        if choice is None:
            cheapest = (fixed + sum(min(o.cost for o in r) for r in options)) / weights
            raise FlipscopeError(f"no plan fits the budget ({budget / weights:.4f} bits per weight; the fewest "
                                 f"possible: {cheapest:.4f})",
                                 fix="raise the budget, or add lower --types")  # fmt: skip
        chosen = {m: kept[c] for unit, kept, c in zip(units, offered, choice.picks, strict=True) for m in unit.linears}
        plan = {module_of[m]: versions[q].types[module_of[m]] for m, q in chosen.items()}
        bank.use(chosen)
        calibration, evaluation = session.meter(), _evaluate(session)
        result = GGUFAdvice(Path(out), (fixed + choice.cost) / weights, budget / weights, choice.value,
                            calibration.mean, evaluation.mean, dict(Counter(plan.values())), imatrix,
                            units=len(units))  # fmt: skip
        if recipe_version is not None:
            _load_version(bank, "recipe", recipe_version, hf, model)
            bank.use(dict.fromkeys(hf.values(), "recipe"))
            recipe = _evaluate(session)
            result.recipe, result.recipe_bpw = settings.size_of, budget / weights
            result.recipe_eval_kl = recipe.mean
            if not (recipe.bad or evaluation.bad):
                result.difference = paired_by_window(np.asarray(evaluation.windows), np.asarray(evaluation.kl),
                                                     np.asarray(recipe.kl))  # fmt: skip
        record = {"file": str(imatrix.resolve()), "sha256": _sha(imatrix)} if imatrix else None
        write_ggml_plan(
            Path(out), plan, made_by="flipscope advise", baseline=spec.label(), source_sha256=_sha(source),
            by=str(settings.by), span=settings.span, types=list(types), bits_per_weight=result.bits_per_weight,
            budget_bpw=result.budget_bpw, size_of=settings.size_of, imatrix=record,
            calibration=session.windows.record(), evaluation=_eval_windows(session), ctx=ablation.ctx,
            predicted_kl=choice.value, calibration_kl=calibration.mean, eval_kl=evaluation.mean,
            eval_per_window=list(evaluation.kl), recipe_eval_kl=result.recipe_eval_kl, sensitivity=table,
        )  # fmt: skip
    finally:
        session.close()
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class _Measure:
    """Each (unit, type) alone on the calibration windows; types whose stored types repeat an earlier type's
    (llama.cpp's fallbacks) measured once."""

    session: Session
    bank: WeightBank
    versions: dict[str, _Version]
    module_of: dict[str, str]  # transformers module → GGUF tensor
    types: tuple[str, ...]

    def stored(self, unit: Unit, qtype: str) -> tuple[str, ...]:
        return tuple(self.versions[qtype].types[self.module_of[m]] for m in unit.linears)

    def kl(self, unit: Unit, qtype: str) -> float | None:
        """The calibration KL with only ``unit`` at ``qtype``; None where a window's is NaN or infinite."""
        self.bank.use(dict.fromkeys(unit.linears, qtype))
        got = self.session.meter()
        if got.bad:
            log.warning("%s at %s: NaN or infinite KL in calibration windows %s; refused", unit.name, qtype, got.bad)
        return None if got.bad else got.mean

    def all(self, units: list[Unit], sizes: dict[str, TensorInfo], shown: Display, cache: Path
            ) -> tuple[list[list[Option]], list[list[str]], dict[str, dict[str, float | None]]]:  # fmt: skip
        """The knapsack's options per unit (cost: the unit's tensors' exact bits), the type each option is, and the
        sensitivity table; read from ``cache`` when the same windows, file, types and imatrix were measured."""
        import json

        known: dict[str, dict[str, float | None]] = json.loads(cache.read_text()) if cache.exists() else {}
        todo = sum(unit.name not in known for unit in units) * len(self.types)
        options: list[list[Option]] = []
        offered: list[list[str]] = []
        table: dict[str, dict[str, float | None]] = {}
        with shown.progress("sensitivities", todo) as advance:
            for unit in units:
                if unit.name not in known:
                    known[unit.name], seen = {}, set()
                    for qtype in self.types:
                        advance(1)
                        if self.stored(unit, qtype) not in seen:
                            seen.add(self.stored(unit, qtype))
                            known[unit.name][qtype] = self.kl(unit, qtype)
                row, kept, table[unit.name] = [], [], {}
                for qtype, kl in known[unit.name].items():
                    stored = self.stored(unit, qtype)
                    table[unit.name]["+".join(sorted(set(stored)))] = kl
                    if kl is not None:
                        cost = sum(8 * tensor_bytes(s, sizes[self.module_of[m]].shape)
                                   for m, s in zip(unit.linears, stored, strict=True))  # fmt: skip
                        row.append(Option(cost, kl))
                        kept.append(qtype)
                if not row:
                    raise FlipscopeError(f"every type of {unit.name} gives NaN or infinite KL on the calibration "
                                         "windows", fix="offer more --types (Q8_0)")  # fmt: skip
                options.append(row)
                offered.append(kept)
        write_atomically(cache, lambda tmp: tmp.write_text(json.dumps(known)))
        return options, offered, table


def _cache_file(key: dict[str, Any]) -> Path:
    """Where sensitivities measured under ``key`` are kept: a second budget or --size-of re-measures nothing."""
    import hashlib
    import json

    from flipscope.plumbing.cache import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    folder = cache_root() / "advise-gguf"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.json"


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
        from flipscope.plumbing.cache import user_path
        from flipscope.store.imatrix import read_imatrix

        path = user_path(settings.imatrix)
        read_imatrix(path)  # a clear error now, not inside llama.cpp
        return path
    if not settings.compute_imatrix:
        return None
    from flipscope.passes.imatrix import collect_imatrix
    from flipscope.store.imatrix import write_imatrix

    windows = [w.ids for w in cast(Any, session.meter).plan.windows]
    device = str(getattr(session.backend, "device", "cpu"))
    matrix = collect_imatrix(session.backend.model, windows, {m: n for n, m in hf.items()}, device=device,
                             dataset=session.windows.corpus)  # fmt: skip
    return write_imatrix(out.with_suffix(".imatrix.gguf"), matrix)


__all__ = ["DEFAULT_TYPES", "PLAN_TYPES", "GGUFAdvice", "GGUFAdviseSettings", "advise_gguf"]
