"""llama.cpp's own quantizer (``llama_model_quantize``) run in-process into the cache: a whole-file type (Q4_K_M,
…), per-tensor types (tensor-type overrides) and an importance matrix handed over through its C API; and a GGUF
file's tensors as llama.cpp stores them."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipscope.compress.ggml import GGMLConfig
from flipscope.compress.gguf_types import TensorInfo
from flipscope.errors import FlipscopeError
from flipscope.models.gguf_file import UNQUANTIZED, file_type, require_llama_cpp
from flipscope.plumbing.atomic import write_once
from flipscope.plumbing.cache import cache_root, file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeJob:
    """What llama.cpp is asked for: a file type (its LLAMA_FTYPE_MOSTLY_ name), tensor-type overrides (pattern,
    type: the first pattern a tensor's name matches wins), an importance matrix file."""

    ftype: str
    overrides: tuple[tuple[str, str], ...] = ()
    imatrix: Path | None = None
    requantize: bool = False

    def key(self) -> str:
        """The cache name's tail: the ftype and llama-cpp-python's version, and a digest of the rest if any."""
        plain = self.ftype + ("-requant" if self.requantize else "") + f"-llama{llama_version()}"
        if not self.overrides and self.imatrix is None:
            return plain
        what = {"overrides": self.overrides, "imatrix": file_sha256(self.imatrix) if self.imatrix else None}
        return f"{plain}-{hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]}"


def tensors_of(path: Path) -> list[TensorInfo]:
    """Every tensor of a GGUF file: name, shape (row length first) and stored type."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise FlipscopeError(f"cannot read the tensors of {path}: {exc}", fix="give a GGUF file") from exc
    return [TensorInfo(t.name, tuple(int(d) for d in t.shape.tolist()), t.tensor_type.name) for t in reader.tensors]


def quantized(source: Path, job: QuantizeJob) -> Path:
    """``source`` quantized by llama.cpp as ``job`` says, cached by content (the source's, the overrides', the
    imatrix's)."""
    llama_cpp = require_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{job.ftype}", None)
    if ftype is None:
        raise FlipscopeError(f"llama.cpp has no quantization type {job.ftype}", fix="see `flipscope methods` (ggml)")
    current = file_type(source)
    if current is not None and current not in UNQUANTIZED and not job.requantize:
        raise FlipscopeError(
            f"{source.name} is already quantized (file type {current}); quantizing it again compounds the error",
            fix=f"add ',requant' to allow it (+ggml:{job.ftype},requant), or start from an F32/F16/BF16 GGUF",
        )
    out = cache_root() / "gguf" / f"{file_sha256(source)[:16]}-{job.key()}.gguf"
    if out.exists():
        return out
    return write_once(out, lambda tmp: _quantize(llama_cpp, source, tmp, ftype, job))


def _quantize(llama_cpp: Any, source: Path, tmp: Path, ftype: int, job: QuantizeJob) -> None:
    from gguf import GGMLQuantizationType

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    params.allow_requantize = job.requantize
    keep: list[Any] = []  # the C arrays and strings must outlive the call
    if job.overrides:
        table = (llama_cpp.llama_model_tensor_override * (len(job.overrides) + 1))()
        for i, (pattern, qtype) in enumerate(job.overrides):
            table[i].pattern = pattern.encode()
            table[i].type = int(GGMLQuantizationType[qtype])
        table[len(job.overrides)].pattern = None  # the end
        keep.append(table)
        params.tt_overrides = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if job.imatrix is not None:
        params.imatrix = _imatrix_table(llama_cpp, job.imatrix, keep, tensors_of(source))
    log.info("quantizing %s to %s with llama.cpp%s", source.name, job.ftype,
             f" ({len(job.overrides)} tensor overrides)" if job.overrides else "")  # fmt: skip
    with _llama_log(llama_cpp) as said:  # llama.cpp logs every tensor; kept for the error, else dropped
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        said_text = said() if code != 0 or not tmp.exists() else ""  # read while the capture is still open
    if code != 0 or not tmp.exists():
        tail = [line for line in said_text.splitlines() if line.strip()][-3:]
        raise FlipscopeError(f"llama.cpp could not quantize {source.name} to {job.ftype} (code {code}): "
                             + " / ".join(line.strip() for line in tail)[-400:],
                             fix="llama.cpp's last log lines are quoted in this message")  # fmt: skip


@contextlib.contextmanager
def _llama_log(llama_cpp: Any) -> Iterator[Callable[[], str]]:
    """llama.cpp's log kept for a while instead of shown (its log callback, and what it writes to file descriptor 2
    directly); yields a function that reads it. The callback in place before is put back after."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: Any) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    before, data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(before), ctypes.byref(data))
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        llama_cpp.llama_log_set(keep, None)

        def read() -> str:
            sink.seek(0)
            return "".join(lines) + sink.read().decode("utf-8", errors="replace")

        try:
            yield read
        finally:
            llama_cpp.llama_log_set(before, data)
            os.dup2(saved, 2)
            os.close(saved)


def _imatrix_table(llama_cpp: Any, path: Path, keep: list[Any], tensors: list[TensorInfo]) -> Any:
    """The imatrix file's mean squares as llama.cpp's C array of (name, values, size), ended by a NULL name."""
    import numpy as np

    from flipscope.compress.imatrix import read_imatrix

    values = read_imatrix(path).values()
    if not all(np.isfinite(v).all() for v in values.values()):
        raise FlipscopeError(f"{path}: the importance matrix holds NaN or infinite values", fix="compute it again")
    weights = {t.name for t in tensors if t.quantizable and t.name.startswith("blk.")}
    if not weights & set(values):
        raise FlipscopeError(f"{path} names none of this file's weight tensors (it has e.g. {min(values)!r}, the "
                             f"file {min(weights, default='-')!r}): llama.cpp would quantize without it",
                             fix="give the importance matrix computed for this model")  # fmt: skip
    if weights - set(values):
        lacking = weights - set(values)
        log.warning("%s has no entry for %d of the file's %d block weights (e.g. %s): llama.cpp quantizes those "
                    "without one", path, len(lacking), len(weights), min(lacking))  # fmt: skip
    table = (llama_cpp.llama_model_imatrix_data * (len(values) + 1))()
    for i, (name, column) in enumerate(sorted(values.items())):
        data = np.ascontiguousarray(column, dtype=np.float32)
        keep.append(data)
        table[i].name = name.encode()
        table[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        table[i].size = data.size
    table[len(values)].name = None
    keep.append(table)
    return ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))


def file_for(source: Path, config: GGMLConfig) -> Path:
    """The file a gguf: spec's ``+ggml:`` step names: ``source`` quantized to its type, or to its plan's per-tensor
    types (checked against the file's tensors first), with its importance matrix if any."""
    from flipscope.compress.ggml_plan import check_plan, overrides
    from flipscope.plumbing.cache import user_path

    plan = dict(config.tensors)
    if plan:
        check_plan(plan, tensors_of(source), f"plan {config.plan}")
    imatrix = user_path(config.imatrix) if config.imatrix else None
    made = quantized(source, QuantizeJob(config.ftype, tuple(overrides(plan)), imatrix, config.requantize))
    stored = {t.name: t.qtype for t in tensors_of(made)} if plan else {}
    wrong = sorted(n for n, q in plan.items() if stored.get(n) != q)
    if wrong:  # a tensor llama.cpp kept as it was, or stored otherwise: the plan would not be the file
        raise FlipscopeError(f"plan {config.plan}: llama.cpp stored {len(wrong)} tensor(s) otherwise than planned "
                             f"(e.g. {wrong[0]} as {stored.get(wrong[0])}, not {plan[wrong[0]]})",
                             fix="leave tensors llama.cpp does not quantize out of the plan")  # fmt: skip
    return made


def llama_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return "absent"
