"""llama.cpp's tensor types as it stores them: bytes per block (scales included) from the ``gguf`` package's table,
which types a row length can hold, what llama.cpp makes instead when it cannot (its fallback rule), and the file
type (ftype) a mostly-one-type file is labelled with. Pure: no llama.cpp needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flipscope.errors import FlipscopeError

#: Types a plan may name.
PLAN_TYPES = ("Q2_K", "Q3_K", "Q4_0", "IQ4_NL", "IQ4_XS", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0",
              "F16", "BF16", "F32")  # fmt: skip
#: What llama.cpp quantizes a tensor to when its rows are not whole blocks of the asked type (llama-quant.cpp,
#: tensor_type_fallback); a 32-block type that does not fit either becomes F16.
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL"}
#: The llama_ftype (LLAMA_FTYPE_MOSTLY_…) a file whose weights are mostly of a type is labelled with.
FTYPE = {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K", "Q8_0": "Q8_0",
         "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "IQ4_NL": "IQ4_NL",
         "IQ4_XS": "IQ4_XS"}  # fmt: skip


def check_type(qtype: str, where: str) -> str:
    """``qtype`` upper-cased if llama.cpp can store a plan's tensor in it, else a clear error naming ``where``."""
    name = qtype.strip().upper()
    if name not in PLAN_TYPES:
        raise FlipscopeError(
            f"{where}: unknown llama.cpp tensor type {qtype!r}", fix=f"use one of {', '.join(PLAN_TYPES)}"
        )
    return name


def block(qtype: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of ``qtype`` as llama.cpp stores it."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    return int(size), int(nbytes)


def bits_per_weight(qtype: str) -> float:
    """Stored bits per weight of ``qtype``, block scales included (Q4_K: 144 bytes per 256 weights = 4.5)."""
    size, nbytes = block(qtype)
    return 8 * nbytes / size


def fits(qtype: str, row: int) -> bool:
    """Can a row of ``row`` weights be stored as whole blocks of ``qtype``?"""
    return row % block(qtype)[0] == 0


def tensor_bytes(qtype: str, shape: Sequence[int]) -> int:
    """Bytes of a tensor of ``shape`` (GGUF order: the row length first) stored as ``qtype``; rows must fit."""
    row = int(shape[0])
    if not fits(qtype, row):
        raise FlipscopeError(f"a row of {row} weights is not whole blocks of {qtype}")
    size, nbytes = block(qtype)
    count = 1
    for d in shape:
        count *= int(d)
    return count // size * nbytes


def made_as(qtype: str, row: int) -> str:
    """The type llama.cpp stores a tensor of row length ``row`` in when asked for ``qtype`` (its fallback rule)."""
    if fits(qtype, row):
        return qtype
    fallback = FALLBACK.get(qtype, qtype)
    return fallback if fits(fallback, row) else "F16"


#: Substrings of tensor names llama.cpp never quantizes (llama-quant.cpp, tensor_allows_quantization; some
#: architectures' own lists are not copied: a plan's file is read back, and a tensor llama.cpp left alone refused).
_KEPT = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
         "ssm_conv1d", "shortconv.conv.weight", "position_embd.weight", "token_types.weight", "indexer.k_proj.weight",
         "indexer.q_proj.weight", "attn_rel_b.weight", "rel_pos", "patch_embd", "patch_merger",
         *(f"time_mix_{part}.weight" for part in ("first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1",
                                                  "g2", "decay_w1", "decay_w2", "lerp_fused")))  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """A GGUF tensor: its name, shape (GGUF order: the row length first) and stored type."""

    name: str
    shape: tuple[int, ...]
    qtype: str

    @property
    def row(self) -> int:
        return self.shape[0]

    @property
    def weights(self) -> int:
        count = 1
        for d in self.shape:
            count *= d
        return count

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.qtype, self.shape)

    @property
    def quantizable(self) -> bool:
        """Does llama.cpp's quantizer give this tensor a new type (2-D or more weights, not norms, …)?"""
        dims = len(self.shape)
        while dims > 1 and self.shape[dims - 1] == 1:  # ggml_n_dims: trailing dimensions of 1 do not count
            dims -= 1
        return dims >= 2 and self.name.endswith("weight") and not any(k in self.name for k in _KEPT)


def total_bits(tensors: Sequence[TensorInfo], types: dict[str, str] | None = None) -> int:
    """Bits every tensor stores, each at its type or the one ``types`` gives it (tensor data only: the file adds
    its metadata and alignment padding)."""
    chosen = types or {}
    return sum(8 * tensor_bytes(chosen.get(t.name, t.qtype), t.shape) for t in tensors)
