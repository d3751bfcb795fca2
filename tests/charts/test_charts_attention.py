"""charts.attention.head_maps: one heatmap per head on one colour scale, the image first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooklab.charts.attention import head_maps


def _maps(heads: int = 4, side: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.softmax(torch.randn(heads, side * side, generator=g), -1).reshape(heads, side,
                                                                                    side)


def test_one_heatmap_per_head_after_the_image():
    maps = _maps()
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    fig = head_maps(maps, image=img, title="class token")
    assert [d.type for d in fig.data] == ["image"] + ["heatmap"] * 4
    np.testing.assert_array_equal(fig.data[0].z, np.round(img * 255).astype(np.uint8))
    for i, d in enumerate(fig.data[1:]):
        assert d.z.dtype == np.float32
        np.testing.assert_array_equal(d.z, maps[i].numpy())
        assert d.zmin == 0 and d.zmax == pytest.approx(float(maps.max()))  # shared scale
    assert [a.text for a in fig.layout.annotations] == ["input", "head 1", "head 2", "head 3",
                                                         "head 4"]
    assert [d.showscale for d in fig.data[1:]] == [False, False, False, True]
    assert fig.layout.title.text == "class token"
    assert fig.layout.yaxis2.autorange == "reversed"  # row 0 on top


def test_many_heads_wrap_and_truncate():
    fig = head_maps(_maps(20, 4), titles=[f"h{i}" for i in range(20)], cols=6)
    assert len(fig.data) == 16 and "first 16 of 20 heads" in fig.layout.title.text
    assert fig.data[15].name == "h15"
    assert fig.data[6].xaxis == "x7"  # second row, first column


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(heads, gh, gw\)"):
        head_maps(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="image"):
        head_maps(_maps(), image=np.zeros((4, 32, 32)))
