"""GGUF files for the llama.cpp backend: resolving a spec to a file, its header, and a float32 copy of a quantized
file (llama.cpp's quantizer: ``models/gguf_quantize.py``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_once
from flipscope.plumbing.cache import cache_root, user_path

log = logging.getLogger(__name__)

LLAMA_CPP_PIP = "pip install 'llama-cpp-python==0.3.36'"
#: Rebuilds llama-cpp-python's shared library from source (for an installed one that fails to load).
LLAMA_CPP_REBUILD = (
    "pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python 'llama-cpp-python==0.3.36'"
)
#: general.file_type values of unquantized files (llama_ftype ALL_F32, MOSTLY_F16, MOSTLY_BF16).
UNQUANTIZED = {0: "F32", 1: "F16", 32: "BF16"}
#: llama.cpp context settings that change the numbers: part of every gguf: model's cache key. Flash attention as
#: llama-perplexity uses it by default (about 11% faster on CPU for the bundled model).
ENGINE_SETTINGS: dict[str, Any] = {"flash_attn": True, "n_batch": 512}


def require_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ModuleNotFoundError as exc:
        if exc.name != "llama_cpp":
            raise _unloadable(exc) from exc  # installed, but something it imports is missing
        raise FlipscopeError(
            "gguf: models run through llama-cpp-python, which is not installed", fix=LLAMA_CPP_PIP
        ) from exc
    except (ImportError, OSError, RuntimeError) as exc:  # its shared library missing, or failing to load
        raise _unloadable(exc) from exc
    return llama_cpp


def _unloadable(exc: BaseException) -> FlipscopeError:
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    return FlipscopeError(
        f"gguf: models run through llama-cpp-python, which is installed but cannot be loaded ({detail[:200]})",
        fix=f"reinstall it so that its shared library is built for this machine: {LLAMA_CPP_REBUILD}",
    )


def resolve(location: str) -> Path:
    """A GGUF path, or a bundled model's name: then its float32 GGUF (the same weights as ``bundled:NAME``)."""
    from flipscope.models.bundled import BUNDLED

    name, _, variant = location.partition("@")
    if name in BUNDLED:
        return bundled_gguf(name, original=variant == "original")
    path = user_path(location)
    if not path.is_file():
        raise FlipscopeError(
            f"GGUF file {location} does not exist",
            fix="give a .gguf file, or a bundled model name (gguf:smollm2-135m, gguf:smollm2-135m@original)",
        )
    return path


def file_type(path: Path) -> int | None:
    """general.file_type of a GGUF file (None when absent), read from the header alone: the metadata is walked
    key by key and the tokenizer's arrays are skipped, not parsed (gguf's reader builds them all: seconds)."""
    value = header_value(path, "general.file_type")
    return int(value) if isinstance(value, int) else None


#: GGUF metadata value types: scalar struct formats by type id; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def header_value(path: Path, key: str) -> object | None:
    """A scalar or string metadata value of a GGUF file's header (None when the key is absent)."""
    import struct

    with open(path, "rb") as f:

        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            data = f.read(size)
            if len(data) != size:
                raise FlipscopeError(f"{path} is truncated (its GGUF header ends early)", fix="fetch the file again")
            return struct.unpack("<" + fmt, data)[0]

        def skip(kind: int, count: int = 1) -> None:
            if kind in _SCALARS:
                f.seek(struct.calcsize("<" + _SCALARS[kind]) * count, os.SEEK_CUR)
            elif kind == 8:
                for _ in range(count):
                    f.seek(read("Q"), os.SEEK_CUR)
            elif kind == 9:
                for _ in range(count):
                    inner = read("I")
                    skip(inner, read("Q"))
            else:
                raise FlipscopeError(f"{path}: unknown GGUF value type {kind}", fix="is this a GGUF file?")

        if f.read(4) != b"GGUF":
            raise FlipscopeError(f"{path} is not a GGUF file (no GGUF magic)", fix="give a .gguf file")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(read("Q")):
            name = f.read(read("Q")).decode("utf-8", errors="replace")
            kind = read("I")
            if name == key and kind in _SCALARS:
                return read(_SCALARS[kind])
            if name == key and kind == 8:
                return f.read(read("Q")).decode("utf-8", errors="replace")
            skip(kind)
    return None


def bundled_gguf(name: str, *, original: bool = False) -> Path:
    """The bundled model's GGUF as shipped (``original``), or a float32 copy with every tensor dequantized."""
    from flipscope.models.bundled import lookup

    model = lookup(name)
    shipped = model.shipped()
    if original:
        return shipped
    out = cache_root() / "gguf" / f"{model.name}-{model.version}-F32.gguf"
    if not out.exists():
        log.info("writing a float32 copy of %s once: %s", shipped.name, out)
        write_once(out, lambda tmp: _dequantize_into(shipped, tmp, None))
    return out


def dequantized_copy(source: Path, out: Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Copy a GGUF file's metadata and tensors, every tensor dequantized to float32 (file type ALL_F32);
    ``metadata`` replaces the values of existing keys (e.g. ``tokenizer.ggml.add_bos_token``)."""
    write_once(out, lambda tmp: _dequantize_into(source, tmp, metadata), done=lambda _: False)


def _dequantize_into(source: Path, tmp: Path, metadata: dict[str, Any] | None) -> None:
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(tmp), arch=str(arch))
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = 0 if field.name == "general.file_type" else field.contents()
        value = (metadata or {}).get(field.name, value)
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        data = np.asarray(tensor.data)
        if tensor.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = dequantize(data, tensor.tensor_type)
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # numpy order
        writer.add_tensor(tensor.name, np.ascontiguousarray(data, dtype=np.float32).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
