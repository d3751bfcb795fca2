"""The store's write path (hooklab.store.format._write_pipelined): early writeback in pieces.

The file written durably in small pieces, with the kernel's writeback started per piece, must be
byte-for-byte the file written without it, with the right sha256, and readable back.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from hooklab.store import format as fmt
from hooklab.store.format import LazyTensors


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"big": torch.randn(50_001, generator=g), "ints": torch.arange(37),
            "half": torch.randn(3, 5, generator=g).half(), "empty": torch.empty(0, 4),
            "t0000001": torch.randn(7, 9, generator=g).t()}


@pytest.mark.parametrize("piece", [1000, 4096, 1 << 24])
@pytest.mark.parametrize("writeback", [True, False])
def test_durable_pieces_write_the_same_file(tmp_path, monkeypatch, piece, writeback):
    calls: list[tuple[int, int]] = []
    real = fmt._start_writeback
    if writeback and real is not None:
        def spy(fd, offset, nbytes, flags):
            calls.append((offset, nbytes))
            return real(fd, offset, nbytes, flags)
        monkeypatch.setattr(fmt, "_start_writeback", spy)
    else:
        monkeypatch.setattr(fmt, "_start_writeback", None)
    monkeypatch.setattr(fmt, "WRITEBACK_CHUNK", piece)
    tensors = _tensors()
    plain = fmt.write_tensors(tmp_path / "plain.safetensors", tensors, durable=False)
    durable = fmt.write_tensors(tmp_path / "durable.safetensors", tensors, durable=True)
    a = (tmp_path / "plain.safetensors").read_bytes()
    b = (tmp_path / "durable.safetensors").read_bytes()
    assert a == b and plain == durable
    assert durable["sha256"] == hashlib.sha256(b).hexdigest() and durable["bytes"] == len(b)
    lazy = LazyTensors(tmp_path / "durable.safetensors", "test")
    for k, t in tensors.items():
        assert torch.equal(lazy[k], t)
    if writeback and real is not None and piece < len(b):
        # contiguous ranges from 0, each at least one piece, never past the end
        assert calls and calls[0][0] == 0
        for (o1, n1), (o2, _) in zip(calls, calls[1:]):
            assert o2 == o1 + n1 and n1 >= piece
        assert calls[-1][0] + calls[-1][1] <= len(b)
    else:
        assert not calls


def test_events_file_hash_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "WRITEBACK_CHUNK", 256)
    from hooklab.core.trace import Trace
    tr = Trace()
    for i in range(50):
        tr.record_event("forward", "forward", f"l{i}", "output", torch.randn(3), keep=False)
    info = fmt.write_events(tmp_path / "events.parquet", tr.events, durable=True)
    data = (tmp_path / "events.parquet").read_bytes()
    assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert len(fmt.read_events(tmp_path / "events.parquet", "test")) == 50
