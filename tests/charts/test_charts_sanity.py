"""The sanity strip figure: one heatmap per cascade step (+ the data test), float32 maps of the
result, the similarity written under each randomised map, the verdict in the title."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hooklab.cam import sanity as S
from hooklab.charts.sanity import sanity_strip
from hooklab.data.datasets import make_shapes
from hooklab.models import zoo


@pytest.fixture(scope="module")
def res():
    model = zoo.shipped_model("simple_cnn_shapes")
    return S.mprt(model, make_shapes(2, split="test").images, "gradcam", depth="top")


def test_strip_has_one_map_per_step_with_scores(res):
    fig = sanity_strip(res, index=1)
    assert len(fig.data) == 6  # original + 5 randomised layers
    for k, trace in enumerate(fig.data):
        z = np.asarray(trace.z)
        assert z.dtype == np.float32
        np.testing.assert_allclose(z, res.maps[k, 1].numpy(), atol=1e-6)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[:6] == ["original", "fc2", "fc1", "conv3", "conv2", "conv1"]
    rho, ssim = float(res.spearman[3, 1]), float(res.ssim[3, 1])
    assert f"ρ {rho:.2f} · SSIM {ssim:.2f}" == texts[6 + 2]
    assert ("passes" if res.passed else "fails") in fig.layout.title.text


def test_data_test_beside_it_and_bad_index(res):
    fake = S.DataRandomisationResult("gradcam", "Grad-CAM", "conv3", res.maps[0], res.maps[-1],
                                     torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]),
                                     res.targets, ("a", "b"))
    fig = sanity_strip(res, data=fake)
    assert len(fig.data) == 8
    assert "ρ 0.10 · SSIM 0.30" in [a.text for a in fig.layout.annotations]
    with pytest.raises(IndexError, match="pick 0..1"):
        sanity_strip(res, index=2)
