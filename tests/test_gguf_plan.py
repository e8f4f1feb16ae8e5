"""Per-tensor llama.cpp types without llama.cpp: sizes as llama.cpp stores each type, its fallback rule, ggml plan
files and their tensor-type overrides, refusals, importance-matrix files and collection."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from flipscope.compress.gguf_types import TensorInfo, bits_per_weight, made_as, tensor_bytes, total_bits
from flipscope.errors import FlipscopeError

#: Bytes per block from ggml-common.h's block structs, added up by hand (fp16 d/dmin = 2 bytes each).
BLOCK_STRUCTS = {
    "Q4_0": (32, 2 + 16), "Q4_1": (32, 2 + 2 + 16), "Q5_0": (32, 2 + 4 + 16), "Q5_1": (32, 2 + 2 + 4 + 16),
    "Q8_0": (32, 2 + 32), "IQ4_NL": (32, 2 + 16),
    "Q2_K": (256, 16 + 64 + 2 + 2), "Q3_K": (256, 32 + 64 + 12 + 2), "Q4_K": (256, 2 + 2 + 12 + 128),
    "Q5_K": (256, 2 + 2 + 12 + 32 + 128), "Q6_K": (256, 128 + 64 + 16 + 2), "IQ4_XS": (256, 2 + 2 + 4 + 128),
}  # fmt: skip


@pytest.mark.parametrize("qtype", sorted(BLOCK_STRUCTS))
def test_bits_per_weight_as_llama_cpp_stores_each_type(qtype: str) -> None:
    size, nbytes = BLOCK_STRUCTS[qtype]
    assert bits_per_weight(qtype) == 8 * nbytes / size
    assert tensor_bytes(qtype, (1536, 576)) == 1536 * 576 // size * nbytes


def test_llama_cpp_fallback_for_rows_that_are_not_whole_blocks() -> None:
    assert [made_as(t, 576) for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")] == [
        "Q4_0", "Q4_0", "Q5_0", "Q5_1", "Q8_0", "Q8_0"]  # fmt: skip
    assert made_as("Q4_K", 1536) == "Q4_K" and made_as("Q4_K", 100) == "F16"
    with pytest.raises(FlipscopeError, match=r"not whole blocks of Q4_K"):
        tensor_bytes("Q4_K", (576, 576))
    tensors = [TensorInfo("a.weight", (1536, 4), "F32"), TensorInfo("b_norm.weight", (1536,), "F32")]
    assert total_bits(tensors) == 8 * 4 * (1536 * 4 + 1536)
    assert total_bits(tensors, {"a.weight": "Q4_K"}) == 8 * (4 * 6 * 144 + 4 * 1536)  # 4 rows of 6 blocks


FILE = [TensorInfo("token_embd.weight", (576, 1000), "F32"), TensorInfo("blk.1.attn_q.weight", (576, 576), "F32"),
        TensorInfo("blk.11.attn_q.weight", (576, 576), "F32"), TensorInfo("blk.1.ffn_down.weight", (1536, 576), "F32"),
        TensorInfo("blk.1.attn_norm.weight", (576,), "F32")]  # fmt: skip


def test_plan_overrides_are_exact_names_and_refusals() -> None:
    from flipscope.compress.ggml_plan import check_plan, overrides

    plan = {"blk.1.attn_q.weight": "Q8_0", "blk.1.ffn_down.weight": "Q4_K", "token_embd.weight": "Q5_0"}
    check_plan(plan, FILE, "p.json")
    patterns = overrides(plan)
    # llama.cpp takes the first pattern a name matches (regex search): blk.1's must not catch blk.11's
    matched = {t.name: next((q for p, q in patterns if re.search(p, t.name)), None) for t in FILE}
    assert matched == {**plan, "blk.11.attn_q.weight": None, "blk.1.attn_norm.weight": None}
    with pytest.raises(FlipscopeError, match=r"does not have.*blk.2.attn_q"):
        check_plan({"blk.2.attn_q.weight": "Q8_0"}, FILE, "p.json")
    with pytest.raises(FlipscopeError, match=r"rows of 576 weights, not whole blocks of Q4_K; llama.cpp would store "
                                             r"it as Q5_0"):  # fmt: skip
        check_plan({"blk.1.attn_q.weight": "Q4_K"}, FILE, "p.json")
    column = TensorInfo("blk.1.attn_sinks.weight", (576, 1, 1), "F32")  # ggml_n_dims: 1-D, kept as it is
    assert not column.quantizable and TensorInfo("x.weight", (576, 2, 1), "F32").quantizable
    # llama.cpp keeps RWKV's small time_mix_w1/… matrices but quantizes time_mix_key/value/receptance/output
    assert not TensorInfo("blk.0.time_mix_w1.weight", (64, 576), "F32").quantizable
    assert TensorInfo("blk.0.time_mix_key.weight", (576, 576), "F32").quantizable
    with pytest.raises(FlipscopeError, match=r"does not quantize blk.1.attn_norm"):
        check_plan({"blk.1.attn_norm.weight": "Q8_0"}, FILE, "p.json")


def test_plan_files_name_their_method(tmp_path: Path) -> None:
    from flipscope.compress import RTNConfig
    from flipscope.compress.ggml import GGMLConfig
    from flipscope.compress.ggml_plan import read_ggml_plan, write_ggml_plan
    from flipscope.compress.plan import read_plan, write_plan

    ggml = write_ggml_plan(tmp_path / "g.json", {"blk.1.attn_q.weight": "q8_0", "token_embd.weight": "Q4_K"})
    assert read_ggml_plan(ggml)[0] == {"blk.1.attn_q.weight": "Q8_0", "token_embd.weight": "Q4_K"}
    config = GGMLConfig.parse(f"plan={ggml}")
    assert config.tensors == (("blk.1.attn_q.weight", "Q8_0"), ("token_embd.weight", "Q4_K"))
    assert config.ftype in ("Q8_0", "Q4_K_M") and config.label() == f"ggml:plan={ggml}"
    rtn = write_plan(tmp_path / "r.json", RTNConfig(bits=4, group_size=64), {})
    with pytest.raises(FlipscopeError, match=r"is a rtn plan, not a ggml one"):
        GGMLConfig.parse(f"plan={rtn}")
    with pytest.raises(FlipscopeError, match=r"is a ggml plan, not a rtn one"):
        read_plan(ggml)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "flipscope-plan", "version": 1, "method": "ggml",
                               "tensors": {"blk.1.attn_q.weight": "Q9_9"}}))  # fmt: skip
    with pytest.raises(FlipscopeError, match=r"unknown llama.cpp tensor type 'Q9_9'"):
        GGMLConfig.parse(f"plan={bad}")


def test_a_plan_fitted_with_an_imatrix_brings_it_or_refuses(tmp_path: Path) -> None:
    from flipscope.compress.ggml import GGMLConfig
    from flipscope.compress.ggml_plan import write_ggml_plan
    from flipscope.compress.imatrix import Imatrix, write_imatrix
    from flipscope.plumbing.cache import file_sha256

    matrix = write_imatrix(tmp_path / "m.imatrix.gguf", Imatrix({"blk.1.attn_q.weight": np.ones(576)},
                                                                {"blk.1.attn_q.weight": 4.0}))  # fmt: skip
    record = {"file": str(matrix), "sha256": file_sha256(matrix)}
    plan = write_ggml_plan(tmp_path / "p.json", {"blk.1.attn_q.weight": "Q8_0"}, imatrix=record)
    config = GGMLConfig.parse(f"plan={plan}")
    assert config.imatrix == str(matrix) and config.imatrix_sha256 == record["sha256"]
    assert config.label() == f"ggml:plan={plan},imatrix={matrix}"
    matrix.unlink()
    with pytest.raises(FlipscopeError, match=r"fitted with the importance matrix .* gone or changed"):
        GGMLConfig.parse(f"plan={plan}")
    with pytest.raises(FlipscopeError, match=r"imatrix file nowhere.dat does not exist"):
        GGMLConfig.parse("Q4_K_M,imatrix=nowhere.dat")


def test_imatrix_files_round_trip_and_legacy(tmp_path: Path) -> None:
    from flipscope.compress.imatrix import Imatrix, read_imatrix, write_imatrix

    rng = np.random.default_rng(0)
    sums = {"blk.0.attn_q.weight": rng.random(64) * 10, "blk.0.ffn_down.weight": rng.random(128)}
    counts = {"blk.0.attn_q.weight": 40.0, "blk.0.ffn_down.weight": 8.0}
    written = write_imatrix(tmp_path / "m.gguf", Imatrix(sums, counts, ["corpus"], 2, 20))
    from gguf import GGUFReader

    reader = GGUFReader(str(written))  # what llama.cpp's imatrix loader needs: these keys, F32 sums and counts
    assert {"imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"} <= set(reader.fields)
    shapes = {t.name: (t.tensor_type.name, [int(d) for d in t.shape]) for t in reader.tensors}
    assert shapes["blk.0.attn_q.weight.in_sum2"] == ("F32", [64, 1])
    assert shapes["blk.0.attn_q.weight.counts"] == ("F32", [1, 1])
    back = read_imatrix(written)
    assert back.counts == counts and back.datasets == ["corpus"] and (back.chunk_count, back.chunk_size) == (2, 20)
    for name, value in back.values().items():
        np.testing.assert_allclose(value, sums[name] / counts[name], rtol=1e-6)
    unseen = Imatrix({"blk.0.attn_k.weight": np.zeros(8)}, {"blk.0.attn_k.weight": 0.0}).values()
    assert unseen["blk.0.attn_k.weight"].tolist() == [1.0] * 8  # as llama-quantize: ones where no row reached it
    # legacy: entries, (name length, name, calls, values, mean squares × calls), then chunks
    mean = rng.random(32).astype(np.float32)
    entry = b"blk.3.ffn_up.weight"
    legacy = struct.pack("<ii", 1, len(entry)) + entry + struct.pack("<ii", 5, 32) + (mean * 5).tobytes()
    (tmp_path / "old.dat").write_bytes(legacy + struct.pack("<i", 5))
    np.testing.assert_allclose(read_imatrix(tmp_path / "old.dat").values()["blk.3.ffn_up.weight"], mean, rtol=1e-6)
    (tmp_path / "junk.dat").write_bytes(b"\x01\x00\x00\x00\xff\xff")
    with pytest.raises(FlipscopeError, match=r"junk.dat is not a readable llama.cpp imatrix"):
        read_imatrix(tmp_path / "junk.dat")


def test_collect_imatrix_sums_squared_inputs_of_each_block_linear(tiny_llama: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from flipscope.passes.imatrix import collect_imatrix

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    windows = [[1, 5, 9, 12, 3], [7, 7, 2]]  # different lengths: counts are rows, not windows
    names = {"model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight", "model.layers.1.mlp.down_proj":
             "blk.1.ffn_down.weight", "lm_head": "output.weight"}  # fmt: skip
    got = collect_imatrix(model, windows, names)
    assert set(got.sums) == {"blk.0.attn_q.weight", "blk.1.ffn_down.weight"}  # llama-imatrix: blk.* alone
    assert got.counts["blk.0.attn_q.weight"] == 8 and got.chunk_count == 2
    expected = np.zeros(64)
    with torch.no_grad():  # the q projection's input, by hand: the first block's input norm of the embeddings
        for ids in windows:
            x = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.tensor([ids])))
            expected += (x.double() ** 2).sum(dim=(0, 1)).numpy()
    np.testing.assert_allclose(got.sums["blk.0.attn_q.weight"], expected, rtol=1e-6)
