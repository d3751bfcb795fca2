"""hooklab.charts.cam_training and charts.sweep: every frame carries the overlays of its step's
maps, the slider animates to each frame, the sweep heatmap puts each score in its cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hooklab.charts import cam as C
from hooklab.charts.cam_training import location_curves, training_animation
from hooklab.charts.sweep import sweep_heatmap


def _data(steps=3, n=2, size=8):
    rng = np.random.default_rng(0)
    images = [rng.random((size, size, 3), dtype=np.float32) for _ in range(n)]
    maps = rng.random((steps, n, size, size), dtype=np.float32)
    return images, maps


def test_each_frame_is_its_steps_overlays():
    images, maps = _data()
    fig = training_animation(images, maps, [0, 5, 50], titles=["a<b>", "b"], alpha=0.3,
                             captions=["s0", "s5", "s50"], step_label="Schritt")
    assert [f.name for f in fig.frames] == ["0", "5", "50"]
    for k, frame in enumerate(fig.frames):
        assert len(frame.data) == 2
        for c, trace in enumerate(frame.data):
            want = C.to_uint8(C.overlay(images[c], maps[k, c], 0.3))
            assert np.array_equal(np.asarray(trace.z), want)
        assert frame.layout.title.text == ["s0", "s5", "s50"][k]
    # the figure opens on the first frame; the slider's steps go to each frame by name
    assert np.array_equal(np.asarray(fig.data[0].z), np.asarray(fig.frames[0].data[0].z))
    slider = fig.layout.sliders[0]
    assert [list(s.args[0]) for s in slider.steps] == [["0"], ["5"], ["50"]]
    assert slider.currentvalue.prefix == "Schritt "
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"
    assert "a&lt;b&gt;" in [a.text for a in fig.layout.annotations]  # titles are text


def test_frames_differ_when_the_maps_do():
    images, maps = _data()
    maps[1] = 1 - maps[0]
    fig = training_animation(images, maps, [0, 1, 2])
    assert not np.array_equal(np.asarray(fig.frames[0].data[0].z),
                              np.asarray(fig.frames[1].data[0].z))


@pytest.mark.parametrize("bad", ["steps", "images", "captions"])
def test_shapes_that_do_not_fit_are_refused(bad):
    images, maps = _data()
    with pytest.raises(ValueError):
        if bad == "steps":
            training_animation(images, maps, [0, 1])
        elif bad == "images":
            training_animation(images[:1], maps, [0, 1, 2])
        else:
            training_animation(images, maps, [0, 1, 2], captions=["x"])


def test_location_curves_one_line_per_series():
    fig = location_curves([0, 10, 150], {"on the marker": [0.2, 0.9, 0.95],
                                         "accuracy": [0.2, 0.3, 0.3]})
    assert [t.name for t in fig.data] == ["on the marker", "accuracy"]
    assert list(fig.data[0].y) == [0.2, 0.9, 0.95] and list(fig.data[0].x) == [0, 10, 150]
    with pytest.raises(ValueError, match="2 values for 3 steps"):
        location_curves([0, 1, 2], {"x": [0.1, 0.2]})


def test_sweep_heatmap_cells():
    table = pd.DataFrame({"layer": ["conv3", "conv3", "conv1"],
                          "method": ["gradcam", "hirescam", "gradcam"],
                          "score": [0.7, 0.6, 0.4]})
    fig = sweep_heatmap(table, layers=["conv3", "conv1"], method_titles={"gradcam": "Grad-CAM"})
    z = np.asarray(fig.data[0].z, dtype=float)
    assert list(fig.data[0].y) == ["conv3", "conv1"]
    assert list(fig.data[0].x) == ["Grad-CAM", "hirescam"]
    assert z[0].tolist() == pytest.approx([0.7, 0.6]) and z[1, 0] == pytest.approx(0.4)
    assert np.isnan(z[1, 1])
    with pytest.raises(ValueError, match="no 'score'"):
        sweep_heatmap(table.drop(columns="score"))
