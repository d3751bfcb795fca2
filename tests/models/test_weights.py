"""Safe weight loading: safetensors, weights_only state dicts, refusal of code-running pickles."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hooklab.core.errors import HooklabError, UnsafeCheckpointError, WeightsMismatchError
from hooklab.models.weights import (
    MAX_LISTED,
    CheckpointError,
    apply_state_dict,
    load_state_dict,
    save_safetensors,
    unwrap_state_dict,
)
from hooklab.models.zoo import SimpleCNN, get_model


class _Payload:
    """Unpickling this object would create the marker file (via os.system-free open())."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        # builtins.open(marker, "w") creates the file the moment the pickle is loaded.
        return (open, (self.marker, "w"))


def _ref_sd(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return SimpleCNN().state_dict()


def _assert_same(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert own.keys() == sd.keys()
    for k in sd:
        assert torch.equal(own[k], sd[k]), k


def test_safetensors_round_trip(tmp_path):
    sd = _ref_sd()
    p = save_safetensors(sd, tmp_path / "cnn.safetensors")
    _assert_same(get_model("simple_cnn", weights=p), sd)


def test_pt_state_dict_plain_wrapped_and_prefixed(tmp_path):
    sd = _ref_sd()
    variants = {
        "plain.pt": sd,
        "wrapped.pth": {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 1e-3}},
        "model.pth": {"model": sd},
        "ddp.pt": {f"module.{k}": v for k, v in sd.items()},
        "nested_ddp.pt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        _assert_same(get_model("simple_cnn", weights=str(tmp_path / name)), sd)


def test_format_taken_from_content_not_suffix(tmp_path):
    sd = _ref_sd()
    save_file(sd, str(tmp_path / "really_safetensors.pt"))
    torch.save(sd, tmp_path / "really_torch.safetensors")
    for name in ("really_safetensors.pt", "really_torch.safetensors"):
        _assert_same(get_model("simple_cnn", weights=tmp_path / name), sd)


@pytest.mark.parametrize("legacy", [False, True])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "evil.pth"
    obj = {"conv1.weight": torch.zeros(1), "x": _Payload(str(marker))}
    if legacy:
        with ckpt.open("wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, ckpt)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as info:
        get_model("simple_cnn", weights=ckpt)
    assert not marker.exists(), "the checkpoint's payload ran"
    assert "safetensors" in str(info.value)
    assert isinstance(info.value, HooklabError)
    # Sanity check that the payload is real: a full unpickle would have run it.
    with ckpt.open("rb") as fh:
        if legacy:
            pickle.load(fh)  # noqa: S301 - proving the test file is dangerous
    if legacy:
        assert marker.exists()


def test_env_override_cannot_reenable_full_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "payload_ran"
    torch.save({"x": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_corrupt_empty_missing_and_non_state_dict(tmp_path):
    sd = _ref_sd()
    torch.save(sd, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello, not a checkpoint")
    save_file(sd, str(tmp_path / "ok.safetensors"))
    st = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(st[:200])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"epoch": 3, "name": "x"}, tmp_path / "notensors.pt")
    for name in ("trunc.pt", "empty.pt", "text.pth", "trunc.safetensors", "list.pt",
                 "notensors.pt", "missing.pt"):
        with pytest.raises(CheckpointError) as info:
            load_state_dict(tmp_path / name)
        assert name in str(info.value), name
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path)  # a directory


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_corrupt_not_unsafe(tmp_path, seed):
    """Bytes that are no pickle at all are called corrupt; only a pickle that asks for code
    is called unsafe (torch wraps both in "Weights only load failed")."""
    import numpy as np

    junk = np.random.default_rng(seed).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80\x02" + junk if seed % 2 else junk)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        load_state_dict(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to run code


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    sd = _ref_sd()
    bad = dict(sd)
    del bad["fc2.bias"]
    bad["extra.weight"] = torch.zeros(3)
    bad["conv1.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pt")
    model = get_model("simple_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as info:
        apply_state_dict(model, load_state_dict(tmp_path / "bad.pt"))
    err = info.value
    assert err.missing == ["fc2.bias"]
    assert err.unexpected == ["extra.weight"]
    assert len(err.shape_mismatch) == 1 and "conv1.weight" in err.shape_mismatch[0]
    msg = str(err)
    for word in ("fc2.bias", "extra.weight", "conv1.weight", "(16, 3, 3, 3)", "(32, 3, 3, 3)"):
        assert word in msg
    _assert_same(model, before)  # nothing half-loaded


def test_mismatch_message_is_capped():
    model = get_model("resnet18")
    with pytest.raises(WeightsMismatchError) as info:
        apply_state_dict(model, _ref_sd())
    msg = str(info.value)
    assert "and " in msg and "more" in msg
    assert len(msg) < 2500
    own = model.state_dict()
    assert len(info.value.missing) == len(own) - 1  # conv1.weight exists in both, other shape
    assert "conv1.weight" in info.value.shape_mismatch[0]


def test_wrong_architecture_file(tmp_path):
    save_safetensors(get_model("simple_model"), tmp_path / "small.safetensors")
    with pytest.raises(WeightsMismatchError):
        get_model("simple_cnn", weights=tmp_path / "small.safetensors")


def test_unwrap_rules():
    t = torch.zeros(1)
    assert unwrap_state_dict({"a": t}) == {"a": t}
    assert unwrap_state_dict({"model": {"state_dict": {"module.a": t}}}) == {"a": t}
    with pytest.raises(CheckpointError):
        unwrap_state_dict("nope")


def test_save_is_atomic_no_temp_left(tmp_path, monkeypatch):
    """A save that dies half-way (disk full) over an existing file leaves the old file intact
    and no temporary file; a successful save then replaces it."""
    import safetensors.torch

    p = save_safetensors(_ref_sd(1), tmp_path / "sub" / "w.safetensors")
    assert [x.name for x in p.parent.iterdir()] == ["w.safetensors"]
    old = p.read_bytes()
    real = safetensors.torch.save_file
    written: list[str] = []

    def half_then_disk_full(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()  # half of it reached the disk, then it filled up
        Path(filename).write_bytes(data[: len(data) // 2])
        written.append(filename)
        raise OSError(28, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_safetensors(_ref_sd(2), p)
    assert len(written) == 1  # the fault really happened inside the save
    assert p.read_bytes() == old  # the old weights are intact ...
    _assert_same(get_model("simple_cnn", weights=p), _ref_sd(1))
    assert [x.name for x in p.parent.iterdir()] == ["w.safetensors"]  # ... and no temp is left
    monkeypatch.undo()
    save_safetensors(_ref_sd(2), p)
    _assert_same(get_model("simple_cnn", weights=p), _ref_sd(2))
    assert [x.name for x in p.parent.iterdir()] == ["w.safetensors"]
    assert not zipfile.is_zipfile(p) and os.path.getsize(p) > 0
    assert MAX_LISTED >= 5


def test_whole_pickled_module_is_refused_with_advice(tmp_path):
    torch.save(SimpleCNN(), tmp_path / "whole_model.pt")  # a common mistake: the module itself
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        get_model("simple_cnn", weights=tmp_path / "whole_model.pt")
