"""The top eigenpair behind EigenCAM, ``eigen_smooth`` and KPCA-CAM (:mod:`hooklab.cam.eig`),
and EigenCAM's chunked float64 Gram matrix, against ``torch.linalg.eigh`` and a float64 SVD."""

from __future__ import annotations

import torch

from hooklab.cam import methods as cam_methods
from hooklab.cam.eig import top_eigenpair
from hooklab.cam.methods import eigencam


def test_top_eigenpair_equals_the_last_pair_of_eigh():
    torch.manual_seed(0)
    m = torch.randn(5, 40, 30, dtype=torch.float64)
    k = m.transpose(1, 2) @ m
    val, vec = top_eigenpair(k)
    vals, vecs = torch.linalg.eigh(k)
    torch.testing.assert_close(val, vals[:, -1], rtol=1e-12, atol=0)
    # one eigenvector up to its sign
    sign = torch.sign((vec * vecs[..., -1]).sum(dim=1, keepdim=True))
    torch.testing.assert_close(vec * sign, vecs[..., -1], rtol=0, atol=1e-10)
    assert val.dtype == vec.dtype == torch.float64


def test_a_non_finite_matrix_gives_nan_and_the_others_are_kept():
    torch.manual_seed(1)
    m = torch.randn(3, 6, 4, dtype=torch.float64)
    k = m.transpose(1, 2) @ m
    k[1, 0, 0] = float("nan")
    val, vec = top_eigenpair(k)
    assert torch.isnan(val[1]) and torch.isnan(vec[1]).all()
    assert torch.isfinite(val[[0, 2]]).all() and torch.isfinite(vec[[0, 2]]).all()


def test_eigencam_of_nan_activations_is_a_nan_map_not_an_exception():
    a = torch.rand(2, 8, 5, 5)
    a[0, 3, 2, 2] = float("nan")
    out = eigencam(a)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()


def _svd_eigencam(a: torch.Tensor) -> torch.Tensor:
    b, c, h, w = a.shape
    out = torch.zeros(b, h * w, dtype=torch.float64)
    for i in range(b):
        m = a[i].double().reshape(c, -1).T
        m = m - m.mean(0, keepdim=True)
        proj = m @ torch.linalg.svd(m, full_matrices=False)[2][0]
        out[i] = proj if (proj**3).sum() >= 0 else -proj
    return out.clamp(min=0).reshape(b, h, w)


def test_eigencam_over_several_chunks_of_positions_equals_the_svd(monkeypatch):
    """Positions > channels: the Gram matrix is summed over chunks of positions (here 7 of
    them, the last one short), with a large mean to show the centring is exact."""
    monkeypatch.setattr(cam_methods, "_GRAM_ROWS", 64)
    torch.manual_seed(2)
    a = torch.randn(3, 16, 20, 21) * 0.5 + 3.0
    a[:, :4, 5:9, 6:12] += 4.0  # a dominant component, so the eigenvector is well defined
    torch.testing.assert_close(eigencam(a).double(), _svd_eigencam(a), rtol=1e-4, atol=1e-5)
    cl = a.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(eigencam(cl), eigencam(a), rtol=1e-5, atol=1e-6)
