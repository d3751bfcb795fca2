"""`python -m hooklab cam` and `train`: what they print and write equals the library's result."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from hooklab.cam import engine as cam
from hooklab.charts.cam import overlay
from hooklab.cli.main import main
from hooklab.data import datasets as data
from hooklab.data import images
from hooklab.models import zoo as models
from hooklab.store.runs import TraceStore

#: One printed line per map: method, layer, class name, score, peak.
LINE = re.compile(r"^  (\S+)\s+layer (\S+)\s+class (\S+)\s+score\s+(\S+)\s+"
                  r"peak \(row (\d+), col (\d+)\)$", re.MULTILINE)
CLASSES = models.model_info("simple_cnn").class_names


def _check_printed(text: str, results: list[cam.CamResult]) -> None:
    """Each printed line is the library's result: method, layer, class, score, peak."""
    lines = LINE.findall(text)
    assert len(lines) == len(results)
    for (method, layer, label, score, row, col), res in zip(lines, results):
        peak = np.unravel_index(int(res.maps[0].argmax()), tuple(res.maps[0].shape))
        assert (method, layer, label) == (res.method, res.layer, CLASSES[int(res.targets[0])])
        assert float(score) == pytest.approx(float(res.scores[0]), abs=6e-4)
        assert (int(row), int(col)) == (int(peak[0]), int(peak[1]))


def test_cam_writes_overlay_and_maps_equal_to_library(tmp_path, capsys):
    out, npy = tmp_path / "o.png", tmp_path / "m.npy"
    code = main(["cam", "--weights", "random", "--index", "7", "--method", "gradcam",
                 "hirescam", "--out", str(out), "--npy", str(npy)])
    assert code == 0
    text = capsys.readouterr().out
    model = models.get_model("simple_cnn")
    x, _, _ = data.shapes_sample(7)
    ref = [cam.compute(model, x[None], m) for m in ("gradcam", "hirescam")]
    np.testing.assert_allclose(np.load(npy), np.concatenate([r.maps.numpy() for r in ref]),
                               atol=1e-6)
    _check_printed(text, ref)
    display = data.to_display(x)
    for res in ref:
        png = np.asarray(Image.open(tmp_path / f"o-{res.method}.png").convert("RGB"))
        scale = 256 // 32  # small images are enlarged by pixel repetition
        assert png.shape == (32 * scale, 32 * scale, 3)
        small = png[::scale, ::scale]
        assert np.array_equal(png, np.repeat(np.repeat(small, scale, 0), scale, 1))
        want = overlay(display, res.maps[0].numpy(), 0.4)  # 0.4 jet + 0.6 image, as the seed
        assert np.abs(small / 255.0 - want).max() <= 1 / 255 + 1e-6


def test_cam_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["cam", "--weights", "random", "--image", str(bad)]) == 2
    assert main(["cam", "--weights", "random", "--layer", "fc1"]) == 2
    assert main(["cam", "--weights", "random", "--method", "nocam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "conv3" in err[1]  # the non-spatial layer error names a suitable layer


def _auto_device() -> str:
    """What --device auto must pick here: a CUDA GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def test_device_option(tmp_path, capsys):
    """--device cpu gives the default's maps, --device auto runs on what the machine has (the
    CPU without a GPU) and gives the same maps; a device that is not there, or not a device,
    is a one-line error before any work."""
    default, on_cpu, auto = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    assert main(["cam", "--weights", "random", "--npy", str(default)]) == 0
    assert main(["cam", "--weights", "random", "--device", "cpu", "--npy", str(on_cpu)]) == 0
    np.testing.assert_array_equal(np.load(default), np.load(on_cpu))
    assert ", device cpu" in capsys.readouterr().out
    assert main(["cam", "--weights", "random", "--device", "auto", "--npy", str(auto)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(f", device {_auto_device()}"), first
    np.testing.assert_allclose(np.load(auto), np.load(on_cpu), atol=1e-4)  # GPUs round apart
    assert main(["--store", str(tmp_path / "auto"), "record", "--device", "auto", "-q"]) == 0
    (rid,) = TraceStore(tmp_path / "auto").run_ids()
    assert TraceStore(tmp_path / "auto").load(rid).meta["device"].split(":")[0] == _auto_device()
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
    """A 50x40 picture: the CLI's maps, classes and scores are the library's on the same input
    (resized to 32x32, seed normalisation), for the predicted class and for --target 3."""
    path, npy = tmp_path / "pic.png", tmp_path / "m.npy"
    Image.fromarray((np.random.default_rng(0).random((50, 40, 3)) * 255).astype("uint8")).save(path)
    model = models.get_model("simple_cnn")
    x = images.load_image(path, size=(32, 32), normalise=model.hooklab_info).tensor
    assert x.shape == (1, 3, 32, 32)
    for target in (None, 3):
        extra = [] if target is None else ["--target", str(target)]
        assert main(["cam", "--weights", "random", "--image", str(path), "--npy", str(npy),
                     *extra]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"simple_cnn on image {path}, device cpu\n")
        res = cam.compute(model, x, "gradcam", target=target)
        if target is not None:
            assert int(res.targets[0]) == target
        _check_printed(text, [res])
        np.testing.assert_allclose(np.load(npy), res.maps.numpy(), atol=1e-6)


def test_train_saves_a_run_with_history_under_edits(tmp_path, capsys):
    """The run and the weights the CLI writes are those the library trains with the same
    config: every tensor of the file equals the library's model, and the run's history and
    edits are the library's."""
    from hooklab.models.weights import load_state_dict
    from hooklab.studies.train import TrainConfig, train_run

    store, wpath = tmp_path / "runs", tmp_path / "w.safetensors"
    code = main(["--store", str(store), "train", "--steps", "4", "--edit", "conv2=scale(0.5)",
                 "--tags", "halve", "--save-weights", str(wpath)])
    assert code == 0
    out = capsys.readouterr().out
    s = TraceStore(store)
    (rid,) = s.run_ids()
    assert f"saved run {rid}" in out
    trace = s.load(rid)
    config = TrainConfig(steps=4, edits=["conv2=scale(0.5)"])
    ref_trace, ref_model = train_run(config, return_model=True)
    saved, want = load_state_dict(wpath), ref_model.state_dict()
    assert saved.keys() == want.keys()
    for k in want:  # trained for 4 steps at lr 2e-3: a wrong config moves weights by ~1e-3
        torch.testing.assert_close(saved[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.equal(saved["conv1.weight"],
                           models.get_model("simple_cnn", num_classes=6).conv1.weight)
    assert len(trace.meta["history"]) == 4
    for got, ref in zip(trace.meta["history"], ref_trace.meta["history"], strict=True):
        assert got["step"] == ref["step"] and got["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert trace.meta["edits"] == config.edit_specs() == ref_trace.meta["edits"]
    assert trace.meta["edits"][0]["layer"] == "conv2"
    ev = trace.events
    assert set(ev.step) == {0, 1, 2, 3}  # training steps, from 0
    assert (ev.role == "edited").any()
    # the CLI trains what the library's defaults train
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
