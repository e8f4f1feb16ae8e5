"""Importance matrices as llama.cpp keeps them: per weight tensor (GGUF name), the sum over activation rows of
each input column's squared activation, and the number of rows; the quantizer weighs each column's rounding error
by the mean (sum / count). Written in llama.cpp's GGUF imatrix format (``NAME.in_sum2`` and ``NAME.counts``
tensors, ``imatrix.*`` keys: ``llama-quantize --imatrix`` reads it); read in that format or llama.cpp's legacy
``.dat`` one."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_atomically

_SUMS, _COUNTS = ".in_sum2", ".counts"


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # name → [columns] float64 Σ x²
    counts: dict[str, float] = field(default_factory=dict)  # name → activation rows seen
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def values(self) -> dict[str, np.ndarray]:
        """name → [columns] float32 mean squared activation, as llama-quantize hands it to the quantizer (ones for
        a tensor no row reached)."""
        return {n: (s / c if (c := self.counts[n]) > 0 else np.ones_like(s)).astype(np.float32)
                for n, s in self.sums.items()}  # fmt: skip


def write_imatrix(path: Path, imatrix: Imatrix) -> Path:
    from gguf import GGUFWriter

    def write(tmp: Path) -> None:
        writer = GGUFWriter(str(tmp), arch="imatrix")
        writer.add_string("general.type", "imatrix")
        writer.add_array("imatrix.datasets", imatrix.datasets or ["flipscope"])
        writer.add_uint32("imatrix.chunk_count", imatrix.chunk_count)
        writer.add_uint32("imatrix.chunk_size", imatrix.chunk_size)
        for name in sorted(imatrix.sums):
            writer.add_tensor(name + _SUMS, imatrix.sums[name].astype(np.float32).reshape(1, -1))
            writer.add_tensor(name + _COUNTS, np.array([[imatrix.counts[name]]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, write)


def read_imatrix(path: Path) -> Imatrix:
    """An imatrix file in llama.cpp's GGUF format or its legacy one; a clear error naming the file."""
    if not path.is_file():
        raise FlipscopeError(
            f"imatrix file {path} does not exist", fix="give a file written by llama-imatrix or flipscope"
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        return _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)
    except (ValueError, KeyError, struct.error, UnicodeDecodeError, IndexError) as exc:
        raise FlipscopeError(f"{path} is not a readable llama.cpp imatrix ({exc})",
                             fix="give a file llama-imatrix or flipscope wrote") from exc  # fmt: skip


def _read_gguf(path: Path) -> Imatrix:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = Imatrix()
    parts: dict[str, dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        for suffix in (_SUMS, _COUNTS):
            if tensor.name.endswith(suffix):
                parts.setdefault(tensor.name.removesuffix(suffix), {})[suffix] = np.asarray(tensor.data, np.float64)
    for name, got in parts.items():
        if set(got) != {_SUMS, _COUNTS}:
            raise ValueError(f"{name} has sums or counts but not both")
        counts = got[_COUNTS].ravel()
        if counts.size != 1:
            raise ValueError(f"{name}: {counts.size} experts; flipscope reads dense models' imatrices")
        out.sums[name], out.counts[name] = got[_SUMS].ravel(), float(counts[0])
    if not out.sums:
        raise ValueError("no .in_sum2/.counts tensors")
    for key, attr in (("imatrix.chunk_count", "chunk_count"), ("imatrix.chunk_size", "chunk_size")):
        if key in reader.fields:
            setattr(out, attr, int(reader.fields[key].contents()))
    if "imatrix.datasets" in reader.fields:
        out.datasets = [str(d) for d in reader.fields["imatrix.datasets"].contents()]
    return out


def _read_legacy(path: Path) -> Imatrix:
    """llama.cpp's legacy format: int32 entries; per entry int32 name length, name, int32 calls, int32 values,
    float32 values (mean squares × calls); then int32 chunks and the dataset's name."""
    data = path.read_bytes()
    at = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal at
        got = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return got

    out = Imatrix()
    (entries,) = take("i")
    if not 0 < entries < 1_000_000:
        raise ValueError(f"{entries} entries")
    for _ in range(entries):
        (length,) = take("i")
        name = data[at : at + length].decode("utf-8")
        at += length
        calls, count = take("ii")
        values = np.frombuffer(data, np.float32, count, at).astype(np.float64)
        at += 4 * count
        # the legacy file holds mean squares × calls: as sums over `calls` rows
        out.sums[name], out.counts[name] = values, float(max(calls, 1))
    if at + 4 <= len(data):
        (out.chunk_count,) = take("i")
    return out
