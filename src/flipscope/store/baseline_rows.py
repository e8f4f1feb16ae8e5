"""Stored baseline log-probabilities for `flipscope kld`: full rows (quantised) or a compact top-k form, behind one
reader.

A store is a folder: ``header.json`` (kind, tokenizer fingerprint, vocabulary size, corpus hash, settings, whether
it is complete), ``logp.npy`` (the baseline's log-prob of each true next token, float32, exact in every kind) and
the kind's arrays, all written slice by slice into memory-mapped ``.npy`` files. Kind "exact" is the full store
(`--store full`; "exact" is its former name, kept on disk so stores already built are found) — its rows are lossy:

- exact, ``float16``: ``rows.npy`` [N, V] float16 log-probs.
- exact, ``int16``: ``rows.npy`` [N, V] uint16 codes of log p on a uniform grid from the row's max down to
  max − 40 (lower values clip there), with ``lo.npy`` / ``step.npy`` [N] float32; step = 40 / 65535 ≈ 6.1e-4 nats.
  Decoded rows are renormalised.
- compact: ``ids.npy`` [N, k] int32, ``logprobs.npy`` [N, k] float32, ``rest.npy`` [N] float32 and, with tail
  samples, ``sample_ids.npy`` / ``sample_logprobs.npy`` [N, m].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flipscope.errors import FlipscopeError
from flipscope.plumbing.atomic import write_atomically

if TYPE_CHECKING:
    import torch

    from flipscope.metrics.kl import CompactRows

INT16_RANGE = 40.0
_CODES = 65535
KINDS = ("exact", "compact")


@dataclass(frozen=True)
class StoreHeader:
    kind: str
    positions: int
    vocab_size: int
    tokenizer_fingerprint: str
    corpus_sha256: str
    settings: dict[str, Any]
    code: str = "float16"  # exact stores: float16 | int16
    topk: int = 0
    tail_samples: int = 0
    complete: bool = False
    done_windows: int = 0  # windows written and flushed so far: a killed build resumes after them
    done_positions: int = 0

    def bytes_per_position(self) -> float:
        per = 4.0  # logp
        if self.kind == "exact":
            per += 2 * self.vocab_size + (8 if self.code == "int16" else 0)
        else:
            per += 8 * self.topk + 4 + 8 * self.tail_samples
        return per


def llama_cpp_bytes_per_position(vocab_size: int) -> int:
    """llama.cpp's --kl-divergence-base file: 2·⌈V/2⌉ + 4 uint16 values per token."""
    return 2 * (2 * ((vocab_size + 1) // 2) + 4)


class BaselineStore:
    """Writes or reads one stored baseline."""

    def __init__(self, folder: Path, header: StoreHeader, mode: str) -> None:
        self.folder, self.header = folder, header
        shape_n = (header.positions,)
        arrays: dict[str, tuple[tuple[int, ...], Any]] = {"logp": (shape_n, np.float32)}
        if header.kind == "exact":
            arrays["rows"] = (
                (header.positions, header.vocab_size),
                np.float16 if header.code == "float16" else np.uint16,
            )
            if header.code == "int16":
                arrays |= {"lo": (shape_n, np.float32), "step": (shape_n, np.float32)}
        else:
            k, m = header.topk, header.tail_samples
            arrays |= {
                "ids": ((header.positions, k), np.int32),
                "logprobs": ((header.positions, k), np.float32),
                "rest": (shape_n, np.float32),
                "sample_ids": ((header.positions, m), np.int32),
                "sample_logprobs": ((header.positions, m), np.float32),
            }
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in arrays.items():
            path = folder / f"{name}.npy"
            if mode == "w":
                self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            else:
                self.arrays[name] = np.load(path, mmap_mode="r+" if mode == "r+" else "r")

    @classmethod
    def create(cls, folder: Path, header: StoreHeader) -> BaselineStore:
        if header.kind not in KINDS or header.code not in ("float16", "int16"):
            raise FlipscopeError(
                f"unknown store {header.kind}/{header.code}", fix="use exact (float16|int16) or compact"
            )
        folder.mkdir(parents=True, exist_ok=True)
        _write_header(folder, header)
        return cls(folder, header, "w")

    @classmethod
    def open(cls, folder: Path) -> BaselineStore | None:
        """A complete store in ``folder``, or None where there is none (or an unfinished one)."""
        path = folder / "header.json"
        if not path.is_file():
            return None
        try:
            header = StoreHeader(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise FlipscopeError(f"baseline store {folder} has a malformed header: {exc}", fix="delete it") from exc
        return cls(folder, header, "r") if header.complete else None

    @classmethod
    def resume(cls, folder: Path, header: StoreHeader) -> BaselineStore | None:
        """An unfinished store in ``folder`` made with ``header``'s settings, opened to write on from its last
        checkpoint; None where there is none."""
        path = folder / "header.json"
        if not path.is_file():
            return None
        try:
            found = StoreHeader(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            return None  # a header cut short by a kill: start again
        same = {**asdict(found), "done_windows": 0, "done_positions": 0} == asdict(header)
        if found.complete or not same or not found.done_windows:
            return None
        if not (folder / f"rng-{found.done_windows}.npy").is_file():
            return None  # no sampler state for that checkpoint: start again rather than draw differently
        return cls(folder, found, "r+")

    def checkpoint(self, windows: int, positions: int, rng_state: np.ndarray) -> None:
        """Everything written so far is on disk: the arrays flushed, then the generator's state (in a file named by
        the checkpoint), then the header that says how far. A kill anywhere leaves the previous checkpoint whole:
        the header names its windows, and the generator state of exactly those windows."""
        for array in self.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        write_atomically(self.folder / f"rng-{windows}.npy", lambda tmp: save_npy(tmp, rng_state))
        previous = self.header.done_windows
        self.header = StoreHeader(**{**asdict(self.header), "done_windows": windows, "done_positions": positions})
        _write_header(self.folder, self.header)
        (self.folder / f"rng-{previous}.npy").unlink(missing_ok=True)

    def rng_state(self) -> np.ndarray | None:
        path = self.folder / f"rng-{self.header.done_windows}.npy"
        return np.load(path) if self.header.done_windows and path.is_file() else None

    def check_matches(self, *, tokenizer_fingerprint: str, vocab_size: int, corpus_sha256: str, label: str) -> None:
        h = self.header
        if h.tokenizer_fingerprint != tokenizer_fingerprint or h.vocab_size != vocab_size:
            raise FlipscopeError(
                f"{label} has a different tokenizer or vocabulary ({vocab_size}) than the stored baseline "
                f"({h.vocab_size}, {self.folder}); token-level KL compares distributions over the same vocabulary",
                fix="compare models that share the baseline's tokenizer",
            )
        if h.corpus_sha256 != corpus_sha256:
            raise FlipscopeError(
                f"the stored baseline was computed on another corpus ({h.corpus_sha256[:12]}…)",
                fix="use the same --corpus, or let flipscope recompute the baseline",
            )

    def write(self, start: int, rows: torch.Tensor, logp: torch.Tensor, topk: CompactRows | None) -> None:
        """rows: [n, V] log-probs of positions start … start+n-1; logp: [n] of the true next tokens."""
        self.put(start, encode_rows(self.header, rows, logp, topk))

    def put(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """Arrays as ``encode_rows`` makes them, for positions start … start+n-1."""
        end = start + len(arrays["logp"])
        for name, values in arrays.items():
            self.arrays[name][start:end] = values

    def finish(self) -> None:
        for array in self.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        self.header = StoreHeader(**{**asdict(self.header), "complete": True})
        _write_header(self.folder, self.header)

    def read(self, start: int, end: int) -> tuple[torch.Tensor | None, CompactRows | None, torch.Tensor]:
        """(rows [n, V] float32 or None, CompactRows or None, logp [n]) for positions start … end-1."""
        return decode_rows(self.header, self.arrays, start, end)

    def slice(self, start: int, end: int) -> StoredSlice:
        """Positions start … end-1 copied out (what is sent to a Ray actor), read as the store is read."""
        return StoredSlice(self.header, start, {n: np.array(a[start:end]) for n, a in self.arrays.items()})


@dataclass(frozen=True)
class StoredSlice:
    """Positions ``start`` … of a store, copied out of it; ``read`` takes the store's own position numbers."""

    header: StoreHeader
    start: int
    arrays: dict[str, np.ndarray]

    def read(self, start: int, end: int) -> tuple[torch.Tensor | None, CompactRows | None, torch.Tensor]:
        return decode_rows(self.header, self.arrays, start - self.start, end - self.start)


def encode_rows(
    header: StoreHeader, rows: torch.Tensor, logp: torch.Tensor, topk: CompactRows | None
) -> dict[str, np.ndarray]:
    """rows: [n, V] log-probs, logp: [n], topk: the compact rows (compact stores) → the arrays a store of
    ``header``'s kind keeps for these n positions."""
    out = {"logp": logp.cpu().numpy()}
    if header.kind == "exact":
        if header.code == "float16":
            out["rows"] = rows.cpu().numpy().astype(np.float16)
        else:
            out["rows"], out["lo"], out["step"] = encode_int16(rows)
    else:
        assert topk is not None
        for name in ("ids", "logprobs", "rest", "sample_ids", "sample_logprobs"):
            values = getattr(topk, name).cpu().numpy()
            out[name] = values.astype(np.int32) if name.endswith("ids") else values  # the store's dtype
    return out


def decode_rows(
    header: StoreHeader, arrays: dict[str, np.ndarray], start: int, end: int
) -> tuple[torch.Tensor | None, CompactRows | None, torch.Tensor]:
    """(rows [n, V] float32 or None, CompactRows or None, logp [n]) of positions start … end-1 of ``arrays``."""
    import torch

    from flipscope.metrics.kl import CompactRows

    logp = torch.from_numpy(np.array(arrays["logp"][start:end]))
    if header.kind == "exact":
        raw = np.array(arrays["rows"][start:end])
        if header.code == "float16":
            rows = torch.from_numpy(raw.astype(np.float32))
        else:
            rows = decode_int16(raw, np.array(arrays["lo"][start:end]), np.array(arrays["step"][start:end]))
        return torch.log_softmax(rows, dim=-1), None, logp
    parts = {n: torch.from_numpy(np.array(arrays[n][start:end])) for n in ("ids", "logprobs", "rest")}
    samples = {n: torch.from_numpy(np.array(arrays[n][start:end])) for n in ("sample_ids", "sample_logprobs")}
    topk = CompactRows(
        parts["ids"].long(),
        parts["logprobs"],
        parts["rest"],
        samples["sample_ids"].long(),
        samples["sample_logprobs"],
    )
    return None, topk, logp


def encode_int16(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rows: [n, V] log-probs → uint16 codes [n, V], lo [n], step [n] (grid from the row max down INT16_RANGE)."""
    import torch

    top = rows.amax(dim=-1, keepdim=True)  # [n, 1]
    lo = top - INT16_RANGE
    step = torch.full_like(top, INT16_RANGE / _CODES)
    codes = torch.round((rows.clamp(min=lo) - lo) / step).clamp(0, _CODES)
    return codes.cpu().numpy().astype(np.uint16), lo[:, 0].cpu().numpy(), step[:, 0].cpu().numpy()


def decode_int16(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(codes.astype(np.float32) * step[:, None] + lo[:, None])


def _write_header(folder: Path, header: StoreHeader) -> None:
    text = json.dumps(asdict(header), indent=2)
    write_atomically(folder / "header.json", lambda tmp: tmp.write_text(text))


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, np.save adds ".npy" to one without it, as temporary names are)."""
    with open(path, "wb") as handle:
        np.save(handle, array)
