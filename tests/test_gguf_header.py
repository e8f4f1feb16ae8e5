"""Reading one value from a GGUF header without parsing the whole file, against gguf's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flipscope.errors import FlipscopeError
from flipscope.models.gguf_file import file_type, header_value


def _write(path: Path, *, with_type: bool = True) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(3000)])  # an array of strings before the key
    writer.add_token_scores([0.5] * 3000)  # an array of floats
    writer.add_array("test.nested", [[1, 2], [3]])  # arrays of arrays
    writer.add_float64("test.f64", 2.5)
    if with_type:
        writer.add_file_type(15)
    writer.add_string("test.after", "value")
    writer.add_tensor("w", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_header_values_match_gguf_reader(tmp_path: Path) -> None:
    from gguf import GGUFReader

    path = tmp_path / "m.gguf"
    _write(path)
    fields = GGUFReader(str(path)).fields
    assert file_type(path) == int(fields["general.file_type"].contents()) == 15
    assert header_value(path, "test.after") == fields["test.after"].contents() == "value"
    assert header_value(path, "test.f64") == fields["test.f64"].contents() == 2.5
    assert header_value(path, "general.architecture") == "llama"
    assert header_value(path, "absent.key") is None


def test_missing_file_type_is_none(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write(path, with_type=False)
    assert file_type(path) is None


def test_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write(path)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FlipscopeError, match=r"cut\.gguf is truncated"):
        file_type(truncated)
    other = tmp_path / "not.gguf"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(FlipscopeError, match="not a GGUF file"):
        file_type(other)
