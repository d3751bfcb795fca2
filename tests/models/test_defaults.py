"""The shipped default weights: the files are the manifest's, the manifest is today's defaults,
loading them is the file's bytes, a damaged file is an error (never a retraining), and the export
writes a consistent set."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hooklab.cli.main import main
from hooklab.data import datasets as D
from hooklab.models import defaults
from hooklab.models.zoo import SimpleCNN, get_model
from hooklab.studies import export_defaults as export
from hooklab.studies import train as T

TINY = {"n_train": 128, "n_test": 32, "steps": 2, "batch_size": 16}


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Any training or cache use fails the test: shipped weights must come from the files."""
    def refuse(*_a, **_k):
        raise AssertionError("trained although a shipped default matches")

    monkeypatch.setattr(T, "_loop", refuse)
    monkeypatch.setenv(T.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_files_match_their_recorded_hashes():
    entries = defaults.entries()
    assert [e["name"] for e in entries] == list(export.default_configs())
    for e in entries:
        path = defaults.entry_path(e)
        assert path.parent == defaults.DEFAULTS_DIR
        assert defaults.sha256_file(path) == e["sha256"], e["file"]
        assert path.stat().st_size == e["size"]
        with safe_open(str(path), framework="pt") as fh:
            header = json.loads(fh.metadata()["hooklab"])
        assert header["key"] == e["key"] and header["name"] == e["name"]
        assert {"cpu", "isa", "threads", "torch"} <= set(e["machine"])
        assert e["torch"] and 0.0 <= e["test_accuracy"] <= 1.0


def test_manifest_configs_are_the_current_defaults():
    """Changing a default TrainConfig (or the loop or data version) without re-exporting fails."""
    shipped = {e["name"]: e for e in defaults.entries()}
    for name, config in export.default_configs().items():
        assert shipped[name]["config"] == config.to_dict(), name
        assert shipped[name]["key"] == T.config_key(config), name
    assert export.default_configs()["simple_cnn_shapes"] == T.TrainConfig()


@pytest.mark.parametrize("name", ["simple_cnn_shapes", "simple_cnn_biased",
                                  "simple_cnn_rebalanced"])
def test_loading_gives_the_files_outputs_bit_for_bit(name, no_training):
    config = export.default_configs()[name]
    entry = defaults.entry_for_key(T.config_key(config))
    model = T.trained_model(config)
    reference = SimpleCNN(len(D.SHAPE_CLASSES))
    reference.load_state_dict(load_file(str(defaults.entry_path(entry))))
    reference.eval()
    x = D.make_biased_shapes(16, split="test").images
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.hooklab_train["shipped"] == str(defaults.entry_path(entry))
    assert model.hooklab_train["sha256"] == entry["sha256"]
    assert model.hooklab_info.weights.startswith("shipped(")
    assert model.hooklab_info.class_names == D.SHAPE_CLASSES
    assert not no_training.exists()  # the cache was not touched


def test_zoo_and_bias_arms_use_the_shipped_files(no_training):
    from hooklab.studies import bias

    x = D.make_shapes(4, split="test").images
    zoo = get_model("simple_cnn", weights="shapes")
    with torch.no_grad():
        assert torch.equal(zoo(x), T.trained_model()(x))
    assert zoo.hooklab_train["name"] == "simple_cnn_shapes"
    assert bias.train_arm("biased").hooklab_train["name"] == "simple_cnn_biased"
    assert bias.train_arm("rebalanced", 1 / 6).hooklab_train["name"] == "simple_cnn_rebalanced"


def test_a_changed_file_is_a_clear_error_not_a_retraining(tmp_path, monkeypatch, no_training):
    folder = tmp_path / "defaults"
    shutil.copytree(defaults.DEFAULTS_DIR, folder, ignore=shutil.ignore_patterns("*.py",
                                                                                 "__pycache__"))
    monkeypatch.setattr(defaults, "DEFAULTS_DIR", folder)
    assert T.trained_model().hooklab_train["shipped"].startswith(str(folder))  # intact copy
    path = folder / "simple_cnn_shapes.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(defaults.DefaultWeightsError, match="do not match the manifest"):
        T.trained_model()
    path.unlink()
    with pytest.raises(defaults.DefaultWeightsError, match="missing"):
        get_model("simple_cnn", weights="shapes")


def test_other_configs_train_and_shipped_false_skips_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv(T.CACHE_ENV, str(tmp_path / "cache"))
    model = T.trained_model(T.TrainConfig(**TINY))
    assert "shipped" not in model.hooklab_train and T.cache_path(T.TrainConfig(**TINY)).is_file()
    seen = []

    def record_and_stop(config, *_a, **_k):
        seen.append(config)
        raise KeyError("stop before training")

    monkeypatch.setattr(T, "_loop", record_and_stop)
    with pytest.raises(KeyError):
        T.trained_model(shipped=False)  # the default config, but asked to train
    assert len(seen) == 1 and T.config_key(seen[0]) == T.config_key(T.TrainConfig())


def _tiny_defaults():
    from hooklab.studies import bias

    return {"simple_cnn_shapes": T.TrainConfig(**TINY),
            "simple_cnn_biased": bias.arm_config("biased", **TINY)}


def test_export_writes_a_consistent_reproducible_set(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "default_configs", _tiny_defaults)
    out = tmp_path / "out"
    manifest = export.export_defaults(out)
    assert json.loads((out / defaults.MANIFEST).read_text()) == manifest
    first = {}
    for e in defaults.entries(out):
        first[e["file"]] = (out / e["file"]).read_bytes()
        assert defaults.sha256_file(out / e["file"]) == e["sha256"]
        assert e["config"] == _tiny_defaults()[e["name"]].to_dict()
        model, _ = T.train(_tiny_defaults()[e["name"]])  # what train() gives, bit for bit
        sd = defaults.load_entry(e, out)
        assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    # the same export again: the same bytes (no timings or random order in the header)
    export.export_defaults(out)
    assert {f: (out / f).read_bytes() for f in first} == first

    # a failure while training the second model leaves the previous set intact, also the
    # first file, although its new training (another seed) gave other bytes
    real_train, calls = T.train, []

    def fail_second(config, progress=None):
        calls.append(config)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real_train(config, progress)

    monkeypatch.setattr(export, "default_configs", lambda: {
        name: dataclasses.replace(c, seed=1) for name, c in _tiny_defaults().items()})
    monkeypatch.setattr(T, "train", fail_second)
    with pytest.raises(RuntimeError):
        export.export_defaults(out)
    assert len(calls) == 2
    assert {f: (out / f).read_bytes() for f in first} == first
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, defaults.MANIFEST])


def test_cli_export_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export, "default_configs", _tiny_defaults)
    out = tmp_path / "cli-out"
    assert main(["train", "--export-defaults", "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    for e in defaults.entries(out):
        assert f"{e['file']}  sha256 {e['sha256']}" in text
    assert f"in {out}" in text


def test_cli_out_without_export_is_an_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "d"), "--no-save"]) == 2
    assert "--export-defaults" in capsys.readouterr().err
