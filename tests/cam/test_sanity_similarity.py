"""Spearman and SSIM between maps against SciPy: spearmanr, and SSIM written from Wang et al.'s
formula with scipy.ndimage.gaussian_filter (scikit-image's settings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from hooklab.cam import similarity as S


def _maps(n: int = 6, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, size, size, generator=g)
    b = 0.6 * a + 0.4 * torch.rand(n, size, size, generator=g)
    return a, b


def _ssim_reference(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> float:
    """Wang et al. 2004 with a Gaussian window (scikit-image's gaussian_weights=True path)."""
    f = lambda z: ndimage.gaussian_filter(z, sigma, truncate=3.5)  # noqa: E731
    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = f(x), f(y)
    vx, vy, vxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    pad = int(3.5 * sigma + 0.5)
    return float(s[pad:-pad, pad:-pad].mean())


def test_spearman_equals_scipy_also_with_ties():
    a, b = _maps()
    a[0] = torch.round(a[0] * 3) / 3  # many ties
    b[1] = torch.round(b[1] * 2) / 2
    b[2] = torch.zeros_like(b[2])
    b[2, :4] = 1.0  # two tied groups only
    got = S.spearman(a, b)
    want = [stats.spearmanr(a[i].ravel().numpy(), b[i].ravel().numpy()).statistic
            for i in range(a.shape[0])]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert got.shape == (6,) and got.dtype == torch.float32


def test_spearman_of_a_map_with_itself_and_its_reverse_and_a_constant():
    a, _ = _maps(3)
    assert torch.allclose(S.spearman(a, a), torch.ones(3))
    assert torch.allclose(S.spearman(a, 1 - a), -torch.ones(3))
    assert torch.allclose(S.spearman(a, 3 * a + 1), torch.ones(3))  # ranks only
    out = S.spearman(a, torch.full_like(a, 0.5))
    assert torch.isnan(out).all()  # no ranking: NaN, as scipy
    one = S.spearman(a[0], a[0])  # a single pair (H, W)
    assert one.shape == (1,) and float(one) == pytest.approx(1.0)


def test_average_ranks_equal_scipy_rankdata():
    v = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0, 0.0]])
    np.testing.assert_allclose(S.average_ranks(v)[0].numpy(),
                               stats.rankdata(v[0].numpy(), method="average"))


@pytest.mark.parametrize("size", [11, 24, 32])
def test_ssim_equals_the_papers_formula(size):
    a, b = _maps(4, size, seed=size)
    b[3] = torch.zeros_like(b[3])  # a blank map
    got = S.ssim(a, b)
    want = [_ssim_reference(a[i].numpy(), b[i].numpy()) for i in range(4)]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert torch.allclose(S.ssim(a, a), torch.ones(4), atol=1e-6)
    assert S.SSIM_WINDOW == 11


def test_ssim_orders_similarity():
    a, _ = _maps(2, 32)
    g = torch.Generator().manual_seed(5)
    slight = (a + 0.05 * torch.rand(a.shape, generator=g)).clamp(0, 1)
    noise = torch.rand(a.shape, generator=g)
    assert (S.ssim(a, slight) > S.ssim(a, noise) + 0.3).all()


def test_bad_input_is_one_clear_error():
    a, b = _maps(2, 24)
    with pytest.raises(S.SimilarityError, match=r"differ; give two batches"):
        S.spearman(a, b[:, :20])
    with pytest.raises(S.SimilarityError, match="differ"):
        S.ssim(a, b[:1])
    with pytest.raises(S.SimilarityError, match=r"at least 11x11 px"):
        S.ssim(a[:, :8, :8], b[:, :8, :8])
    with pytest.raises(S.SimilarityError, match=r"\(N, H, W\)"):
        S.spearman(a[None], b[None])
    with pytest.raises(S.SimilarityError, match="two tensors"):
        S.ssim(a.numpy(), b)  # type: ignore[arg-type]
