"""hooklab.models.inputs and hooklab.cam.runs: a Grad-CAM view's inputs and its stored run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hooklab.cam import engine
from hooklab.cam import runs as cam_runs
from hooklab.cam.engine import CamError
from hooklab.core.errors import DataError, ImageError
from hooklab.data import datasets as datalib
from hooklab.models import inputs, zoo
from hooklab.models.zoo import SimpleCNN
from hooklab.store.runs import TraceStore


def _info():
    return zoo.model_info("simple_cnn")


def test_shapes_input_is_the_dataset_sample_with_its_mask():
    s = inputs.shapes_input(102, _info())
    img, label, mask = datalib.shapes_sample(102, split="test")
    torch.testing.assert_close(s.x, img[None], atol=1e-5, rtol=0)
    assert s.label == label and s.mask.shape == (32, 32) and s.mask.dtype == bool
    np.testing.assert_array_equal(s.mask, mask.numpy() > 0.5)
    assert s.image.shape == (32, 32, 3) and 0 <= s.image.min() and s.image.max() <= 1


def test_empty_or_broken_upload_is_an_image_error():
    with pytest.raises(ImageError):
        inputs.upload_input(b"", "x.png", _info())
    with pytest.raises(ImageError):
        inputs.upload_input(b"\x89PNG\r\n\x1a\nbroken", "x.png", _info())


def test_class_samples_one_per_class_in_order():
    info = replace(_info(), class_names=tuple(datalib.SHAPE_CLASSES))
    samples = inputs.class_samples(info)
    assert [s.label for s in samples] == list(range(len(datalib.SHAPE_CLASSES)))
    first = {}
    for i in range(200):
        first.setdefault(datalib.shapes_sample(i, split="test")[1], i)
    assert [s.description for s in samples] == \
        [f"shapes test #{first[c]}" for c in range(len(datalib.SHAPE_CLASSES))]
    with pytest.raises(DataError):  # a CIFAR-10 model needs a CIFAR-10 split
        inputs.class_samples(_info())


def test_conflict_examples_marker_names_another_class():
    test = datalib.make_biased_shapes(60, split="test")
    idx = inputs.conflict_examples(test, 6)
    assert 0 < len(idx) <= 6
    assert bool((test.cue_labels[idx] != test.labels[idx]).all())


def test_class_names_in_chinese():
    assert inputs.class_names(datalib.SHAPE_CLASSES, "zh")[0] == \
        inputs.SHAPES_ZH[datalib.SHAPE_CLASSES[0]]
    assert inputs.class_names(datalib.CIFAR10_CLASSES, "zh") == list(datalib.CIFAR10_CLASSES_ZH)


def test_stored_run_rerenders_the_same_cam_without_the_model(tmp_path):
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = inputs.shapes_input(7, _info()).x
    ref = engine.compute(model, x, method="gradcam", layer="conv3", target=2)
    trace = cam_runs.cam_run_trace(model, x, "conv3", 2, meta={"page": "gradcam"})
    assert all(p.grad is None for p in model.parameters())
    store = TraceStore(tmp_path / "runs")
    stored = store.load(store.save(trace, author="t"))
    torch.testing.assert_close(cam_runs.model_input(stored), x)
    for method in ("gradcam", "hirescam"):
        got = cam_runs.rerender(stored, "conv3", method)
        want = engine.compute(model, x, method=method, layer="conv3", target=2)
        np.testing.assert_allclose(got.maps.numpy(), want.maps.numpy(), atol=1e-5)
    np.testing.assert_allclose(cam_runs.rerender(stored, "conv3").maps.numpy(),
                               ref.maps.numpy(), atol=1e-5)
    with pytest.raises(CamError):
        cam_runs.rerender(stored, "conv3", "scorecam")  # needs the model
    sc = cam_runs.rerender(stored, "conv3", "scorecam", model=model, target=2)
    want = engine.compute(model, x, method="scorecam", layer="conv3", target=2)
    np.testing.assert_allclose(sc.maps.numpy(), want.maps.numpy(), atol=1e-5)
