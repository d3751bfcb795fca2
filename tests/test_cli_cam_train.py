"""`python -m hooklab cam` and `train`: what they print and write equals the library's result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hooklab import cam, data, models
from hooklab.cli import main
from hooklab.store import TraceStore


def test_cam_writes_overlay_and_maps_equal_to_library(tmp_path, capsys):
    out, npy = tmp_path / "o.png", tmp_path / "m.npy"
    code = main(["cam", "--weights", "random", "--index", "7", "--method", "gradcam",
                 "hirescam", "--out", str(out), "--npy", str(npy)])
    assert code == 0
    text = capsys.readouterr().out
    assert "gradcam" in text and "hirescam" in text
    maps = np.load(npy)
    model = models.get_model("simple_cnn")
    x, _, _ = data.shapes_sample(7)
    ref = [cam.compute(model, x[None], m).maps.numpy() for m in ("gradcam", "hirescam")]
    np.testing.assert_allclose(maps, np.concatenate(ref), atol=1e-6)
    for m in ("gradcam", "hirescam"):
        img = Image.open(tmp_path / f"o-{m}.png")
        assert img.size[0] >= 32 and img.mode == "RGB"


def test_cam_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["cam", "--weights", "random", "--image", str(bad)]) == 2
    assert main(["cam", "--weights", "random", "--layer", "fc1"]) == 2
    assert main(["cam", "--weights", "random", "--method", "nocam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "conv3" in err[1]  # the non-spatial layer error names a suitable layer


def test_device_option(tmp_path, capsys):
    """--device cpu (and auto on a machine without a GPU) gives the default's maps; a device
    that is not there, or not a device, is a one-line error before any work."""
    default, on_cpu = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["cam", "--weights", "random", "--npy", str(default)]) == 0
    assert main(["cam", "--weights", "random", "--device", "cpu", "--npy", str(on_cpu)]) == 0
    np.testing.assert_array_equal(np.load(default), np.load(on_cpu))
    capsys.readouterr()
    bad = ["tpu", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        assert main(["cam", "--weights", "random", "--device", device]) == 2
        assert main(["--store", str(tmp_path / "runs"), "record", "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 * len(bad) and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "runs").exists() or not TraceStore(tmp_path / "runs").run_ids()
    assert main(["--store", str(tmp_path / "runs"), "record", "--device", "cpu", "-q"]) == 0
    (rid,) = TraceStore(tmp_path / "runs").run_ids()
    trace = TraceStore(tmp_path / "runs").load(rid)
    assert trace.meta["device"] == "cpu"


def test_cam_result_moves_between_devices():
    model = models.get_model("simple_cnn")
    res = cam.compute(model, data.make_shapes(2).images, "gradcam")
    moved = res.to("meta")  # a device every machine has
    tensors = [moved.maps, moved.raw, moved.targets, moved.scores, moved.logits, moved.sample,
               *moved.per_layer.values()]
    assert all(t.device.type == "meta" for t in tensors)
    back = res.to("cpu")
    assert torch.equal(back.maps, res.maps) and back.layers == res.layers and len(back) == 2


def test_cam_on_an_image_file(tmp_path, capsys):
    path = tmp_path / "pic.png"
    Image.fromarray((np.random.default_rng(0).random((50, 40, 3)) * 255).astype("uint8")).save(path)
    assert main(["cam", "--weights", "random", "--image", str(path), "--target", "3"]) == 0
    assert "class" in capsys.readouterr().out


def test_train_saves_a_run_with_history_under_edits(tmp_path, capsys):
    store = tmp_path / "runs"
    code = main(["--store", str(store), "train", "--steps", "4", "--edit", "conv2=scale(0.5)",
                 "--tags", "halve", "--save-weights", str(tmp_path / "w.safetensors")])
    assert code == 0
    out = capsys.readouterr().out
    assert "saved run" in out
    s = TraceStore(store)
    (rid,) = s.run_ids()
    trace = s.load(rid)
    assert len(trace.meta["history"]) == 4
    assert trace.meta["edits"] or trace.meta["train"]["config"]["edits"]
    ev = trace.events
    assert set(ev.step) == {0, 1, 2, 3} or set(ev.step) == {1, 2, 3, 4}
    assert (ev.role == "edited").any()
    m = models.get_model("simple_cnn", weights=str(tmp_path / "w.safetensors"), num_classes=6)
    assert isinstance(m, torch.nn.Module)
    # the CLI trains what the library's defaults train
    from hooklab.train import TrainConfig

    cfg, default = trace.meta["train"]["config"], TrainConfig()
    assert (cfg["batch_size"], cfg["lr"], cfg["act_penalty"], cfg["act_layer"]) == \
        (default.batch_size, default.lr, default.act_penalty, None)
    assert all(r["act_penalty"] > 0 for r in trace.meta["history"])


def test_train_activation_penalty_options(tmp_path):
    store = tmp_path / "runs"
    assert main(["--store", str(store), "train", "--steps", "2", "--act-penalty", "0", "-q"]) == 0
    assert main(["--store", str(store), "train", "--steps", "2", "--act-layer", "conv2",
                 "-q"]) == 0
    runs = [TraceStore(store).load(r) for r in TraceStore(store).run_ids()]
    configs = sorted((r.meta["train"]["config"]["act_penalty"],
                      r.meta["train"]["config"]["act_layer"] or "") for r in runs)
    assert configs == [(0.0, ""), (0.5, "conv2")]
    off = next(r for r in runs if r.meta["train"]["config"]["act_penalty"] == 0.0)
    assert all(r["act_penalty"] is None for r in off.meta["history"])  # NaN (JSON null): off


def test_train_bad_edit_is_one_line(capsys, tmp_path):
    assert main(["--store", str(tmp_path), "train", "--steps", "2", "--edit", "conv9=halve"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("cmd", ["cam", "train"])
def test_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
