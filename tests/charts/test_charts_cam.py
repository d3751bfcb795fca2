"""Grad-CAM figure builders: colours match the seed's jet overlay, figures carry the data."""

from __future__ import annotations

import io
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

from hooklab.charts import cam as C


def _piecewise(x: float, pts: list[tuple[float, float]]) -> float:
    """Independent linear interpolation through break points (no numpy)."""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError(x)


# matplotlib's published jet definition (matplotlib/_cm.py, _jet_data)
RED = [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)]
GREEN = [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)]
BLUE = [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)]


def test_jet_lut_matches_matplotlib_definition():
    lut = C.jet_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.float32
    for i in (0, 1, 30, 64, 100, 128, 170, 200, 230, 255):
        x = i / 255
        expected = (_piecewise(x, RED), _piecewise(x, GREEN), _piecewise(x, BLUE))
        np.testing.assert_allclose(lut[i], expected, atol=1e-6)
    # matplotlib: cm.jet(0.5) -> lut[128] ≈ (0.490, 1.0, 0.478)
    np.testing.assert_allclose(lut[128], (0.4902, 1.0, 0.4775), atol=1e-3)


def test_jet_lut_every_entry_matches_the_segment_data():
    lut = C.jet_lut()
    for i in range(256):
        x = i / 255
        expected = (_piecewise(x, RED), _piecewise(x, GREEN), _piecewise(x, BLUE))
        np.testing.assert_allclose(lut[i], expected, atol=1e-6, err_msg=f"entry {i}")


def _rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", colour).groups()
    return int(r), int(g), int(b)


def _assert_exact_jet(colorscale) -> None:
    """256 stops at i/255, each the LUT entry as uint8 and within rounding of the segment data."""
    stops = [(float(p), _rgb(c)) for p, c in colorscale]
    assert len(stops) == 256
    lut = C.jet_lut()
    for i, (pos, rgb) in enumerate(stops):
        assert pos == pytest.approx(i / 255, abs=1e-12)
        assert rgb == tuple(C.to_uint8(lut[i]).tolist())  # the overlay's table, entry by entry
        x = i / 255
        exact = (_piecewise(x, RED), _piecewise(x, GREEN), _piecewise(x, BLUE))
        assert all(abs(v - 255 * e) <= 0.5 + 1e-6 for v, e in zip(rgb, exact, strict=True)), i


def test_heatmap_colourscale_is_the_overlay_table():
    _assert_exact_jet(C.JET_COLORSCALE)
    cam = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    fig = C.three_panels(np.zeros((8, 8, 3), np.float32), cam)
    heat = fig.data[1]
    assert heat.type == "heatmap"
    _assert_exact_jet(heat.colorscale)
    # the colour the heatmap gives a table position is the overlay's colour at alpha 1
    over = C.to_uint8(C.overlay(np.zeros((1, 256, 3)), (np.arange(256)[None] + 0.5) / 255,
                                 alpha=1.0))
    assert [_rgb(c) for _, c in heat.colorscale] == [tuple(p) for p in over[0].tolist()]
    grid = C.method_grid(np.zeros((8, 8, 3), np.float32), {"a": cam}, show_overlay=False)
    _assert_exact_jet(grid.data[0].colorscale)


def test_cam_difference_uses_the_same_jet():
    from hooklab.charts import compare

    cam = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    fig = compare.cam_difference(cam, cam[::-1])
    _assert_exact_jet(fig.data[0].colorscale)
    _assert_exact_jet(fig.data[1].colorscale)


def test_jet_indexes_like_the_seed():
    # seed: plt.cm.jet(np.uint8(255 * heatmap)) -> integer index into the LUT (truncation)
    cam = np.array([[0.0, 0.5], [0.999, 1.0]], dtype=np.float32)
    out = C.jet(cam)
    lut = C.jet_lut()
    np.testing.assert_array_equal(out[0, 1], lut[127])  # uint8(127.5) == 127
    np.testing.assert_array_equal(out[1, 0], lut[254])
    np.testing.assert_array_equal(out[1, 1], lut[255])
    assert C.jet(np.array([[np.nan, 2.0]]))[0, 0].tolist() == lut[0].tolist()


def test_overlay_is_04_jet_plus_06_image():
    rng = np.random.default_rng(0)
    img = rng.random((8, 8, 3), dtype=np.float32)
    cam = np.zeros((8, 8), dtype=np.float32)  # jet(0) = (0, 0, 0.5)
    out = C.overlay(img, cam)
    np.testing.assert_allclose(out, 0.6 * img + 0.4 * np.array([0, 0, 0.5]), atol=1e-6)
    cam1 = np.ones((8, 8), dtype=np.float32)  # jet(1) = (0.5, 0, 0)
    np.testing.assert_allclose(C.overlay(img, cam1, alpha=1.0),
                               np.broadcast_to([0.5, 0, 0], img.shape),
                               atol=1e-6)
    np.testing.assert_allclose(C.overlay(img, cam1, alpha=0.0), img, atol=1e-6)


def test_overlay_rejects_bad_inputs():
    with pytest.raises(ValueError, match="does not match"):
        C.overlay(np.zeros((8, 8, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="alpha"):
        C.overlay(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ValueError, match="image"):
        C.as_rgb(np.zeros((2, 4, 4, 3)))


def test_as_rgb_accepts_chw_and_grey():
    chw = np.zeros((3, 5, 6), dtype=np.float32)
    chw[0] = 1.0
    hwc = C.as_rgb(chw)
    assert hwc.shape == (5, 6, 3) and hwc[..., 0].min() == 1.0 and hwc[..., 1].max() == 0.0
    assert C.as_rgb(np.full((4, 4), 0.25)).shape == (4, 4, 3)


def test_three_panels_carry_image_cam_and_overlay():
    rng = np.random.default_rng(1)
    img = rng.random((32, 32, 3), dtype=np.float32)
    cam = rng.random((32, 32), dtype=np.float32)
    fig = C.three_panels(img, cam, alpha=0.3, titles=("a", "b", "c"))
    assert isinstance(fig, go.Figure)
    assert [type(t).__name__ for t in fig.data] == ["Image", "Heatmap", "Image"]
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), C.to_uint8(img))
    np.testing.assert_allclose(np.asarray(fig.data[1].z), cam)
    assert np.asarray(fig.data[1].z).dtype == np.float32  # typed arrays, not JSON lists
    np.testing.assert_array_equal(np.asarray(fig.data[2].z),
                                  C.to_uint8(0.3 * C.jet(cam) + 0.7 * img))
    assert [a.text for a in fig.layout.annotations] == ["a", "b", "c"]
    assert fig.layout.yaxis2.autorange == "reversed"  # heatmap row 0 on top, like the image


def test_large_images_are_downsampled_and_say_so():
    img = np.zeros((600, 600, 3), dtype=np.float32)
    cam = np.zeros((600, 600), dtype=np.float32)
    fig = C.three_panels(img, cam)
    assert np.asarray(fig.data[1].z).shape == (200, 200)
    assert fig.layout.meta["downsampled"] == 3
    total = sum(np.asarray(t.z).size for t in fig.data)
    assert total < 1_000_000


def test_method_grid_one_column_per_method():
    img = np.full((16, 16, 3), 0.5, dtype=np.float32)
    cams = {"gradcam": np.zeros((16, 16)), "gradcam++": np.ones((16, 16)), "layercam": np.eye(16)}
    fig = C.method_grid(img, cams)
    assert len(fig.data) == 3 and all(isinstance(t, go.Image) for t in fig.data)
    assert [a.text for a in fig.layout.annotations] == list(cams)
    np.testing.assert_array_equal(np.asarray(fig.data[1].z),
                                  C.to_uint8(C.overlay(img, cams["gradcam++"])))
    raw = C.method_grid(img, cams, show_overlay=False)
    assert all(isinstance(t, go.Heatmap) for t in raw.data)
    assert [t.showscale for t in raw.data] == [False, False, True]
    with pytest.raises(ValueError):
        C.method_grid(img, {})


def test_gallery_and_rows_grid_shapes():
    imgs = [np.full((8, 8, 3), k / 10, dtype=np.float32) for k in range(7)]
    cams = [np.full((8, 8), k / 10, dtype=np.float32) for k in range(7)]
    fig = C.gallery(imgs, cams, [f"class {k}" for k in range(7)], cols=4)
    assert len(fig.data) == 7
    assert fig.data[6].xaxis == "x7" and fig.data[6].yaxis == "y7"  # row 2, col 3
    with pytest.raises(ValueError):
        C.gallery(imgs, cams[:3], ["x"] * 7)
    rows = C.rows_grid(imgs[:3], {"biased": cams[:3], "rebalanced": cams[3:6]}, ["a", "b", "c"])
    assert len(rows.data) == 6
    np.testing.assert_array_equal(np.asarray(rows.data[3].z),
                                  C.to_uint8(C.overlay(imgs[0], cams[3])))
    with pytest.raises(ValueError, match="rebalanced"):
        C.rows_grid(imgs[:3], {"biased": cams[:3], "rebalanced": cams[:2]})


def test_overlay_png_and_npy_round_trip():
    rng = np.random.default_rng(2)
    img = rng.random((10, 12, 3), dtype=np.float32)
    cam = rng.random((10, 12), dtype=np.float32)
    png = C.overlay_png(img, cam, scale=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    back = np.asarray(Image.open(io.BytesIO(png)))
    assert back.shape == (20, 24, 3)
    np.testing.assert_array_equal(back[::2, ::2], C.to_uint8(C.overlay(img, cam)))
    cams = rng.random((2, 10, 12)).astype(np.float64)
    arr = np.load(io.BytesIO(C.cam_npy(cams)), allow_pickle=False)
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr, cams, rtol=1e-6)


def test_deletion_insertion_curves_and_auc():
    x = np.linspace(0, 1, 11)
    fig = C.deletion_insertion(x, 1 - x, x ** 2)
    assert len(fig.data) == 2
    np.testing.assert_allclose(np.asarray(fig.data[0].y), 1 - x, atol=1e-6)
    assert "AUC 0.500" in fig.data[0].name
    assert C.auc(x, x ** 2) == pytest.approx(0.335, abs=1e-9)  # trapezoid of x² on 11 points
    assert "AUC 0.335" in fig.data[1].name
    with pytest.raises(ValueError):
        C.deletion_insertion(x, x[:3], x)


def test_topk_and_metric_bars():
    fig = C.topk_bar(["cat", "dog", "ship"], [0.7, 0.2, 0.1], highlight=1)
    assert list(fig.data[0].y) == ["cat", "dog", "ship"]
    assert fig.data[0].marker.color[1] != fig.data[0].marker.color[0]
    bars = C.metric_bars({"AD": {"gradcam": 0.1, "layercam": 0.2},
                          "IC": {"gradcam": 0.5, "layercam": 0.4}})
    assert [t.name for t in bars.data] == ["AD", "IC"]
    np.testing.assert_allclose(np.asarray(bars.data[1].y), [0.5, 0.4])


def test_topk_softmax_against_torch():
    import torch

    z = np.array([1.0, 3.0, -2.0, 3.5, 0.0], dtype=np.float32)
    names, probs, idx = C.topk(z, ["a", "b", "c", "d", "e"], k=3)
    ref = torch.softmax(torch.from_numpy(z), 0)
    vals, ind = ref.topk(3)
    assert idx == ind.tolist() and names == ["d", "b", "a"]
    np.testing.assert_allclose(probs, vals.numpy(), rtol=1e-6)
    assert C.topk(z, ["a"], k=99)[0][-1] == "2"  # unnamed class -> index; k clipped to size
