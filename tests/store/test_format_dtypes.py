"""A safetensors dtype name this torch build lacks is a corrupt header, not a float32 guess."""

from __future__ import annotations

import json
import struct

import pytest

from hooklab.core.errors import CorruptRunError
from hooklab.store import format as fmt


def _file(tmp_path, dtype: str, nbytes: int):
    header = json.dumps({"t": {"dtype": dtype, "shape": [nbytes], "data_offsets": [0, nbytes]}})
    hb = header.encode() + b" " * (-len(header) % 8)
    path = tmp_path / "tensors.safetensors"
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + bytes(nbytes))
    return path


def test_a_known_dtype_reads(tmp_path):
    _, entries = fmt.read_tensor_header(_file(tmp_path, "U8", 4), "run")
    assert entries["t"][0] is not None and entries["t"][1] == (4,)


def test_a_dtype_this_torch_lacks_is_corrupt(tmp_path, monkeypatch):
    # safetensors maps dtypes an older torch lacks (e.g. F8_E8M0 before torch 2.7) to None
    monkeypatch.setitem(fmt._ST_TYPES, "F8_E8M0", None)
    with pytest.raises(CorruptRunError, match="F8_E8M0"):
        fmt.read_tensor_header(_file(tmp_path, "F8_E8M0", 4), "run")
