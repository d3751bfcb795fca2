"""hooklab.cam.attention: class-token attention per head, attention rollout (against a numpy
version) and LeGrad (gradients against torch.autograd.grad on a hand-written ViT forward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import hooklab.cam as cam
from hooklab.cam import attention as att_cam
from hooklab.cam.methods import METHODS, method_name, minmax
from hooklab.recording.attention import AttentionError
from tests.conftest import hook_counts
from tests.vit_reference import tiny_vit, vit_by_hand


@pytest.fixture(scope="module")
def vit():
    return tiny_vit(num_layers=3)


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _numpy_rollout(maps: list[np.ndarray], fusion: str) -> np.ndarray:
    """Abnar & Zuidema by hand: fuse heads, (A + I) / rowsum, multiply first to last."""
    out = []
    for b in range(maps[0].shape[0]):
        r = np.eye(maps[0].shape[-1])
        for a in maps:
            f = {"mean": a[b].mean(0), "max": a[b].max(0), "min": a[b].min(0)}[fusion]
            f = f.astype(np.float64) + np.eye(f.shape[0])
            f = f / f.sum(axis=1, keepdims=True)
            r = f @ r
        out.append(r[0, 1:].reshape(4, 4))
    return np.stack(out)


def test_registered_under_their_names():
    assert method_name("rollout") == "rollout" and method_name("Attention rollout") == "rollout"
    assert method_name("LeGrad") == "legrad"
    assert METHODS["rollout"].needs_model and not METHODS["rollout"].class_specific
    assert METHODS["legrad"].needs_model and METHODS["legrad"].class_specific


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_equals_numpy_by_hand(vit, x, fusion, no_leak):
    with torch.no_grad():
        _, maps = vit_by_hand(vit, x)
    ref = _numpy_rollout([m.numpy() for m in maps], fusion)
    with no_leak(vit):
        got = att_cam.rollout(vit, x, head_fusion=fusion)
    assert got.shape == (3, 4, 4)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=1e-6)


def test_rollout_through_compute_is_the_same_map(vit, x, no_leak):
    with no_leak(vit):
        res = cam.compute(vit, x, method="rollout")
    raw = att_cam.rollout(vit, x)
    torch.testing.assert_close(res.raw, raw)
    torch.testing.assert_close(res.maps, minmax(cam.resize(raw, (32, 32))))
    assert res.maps.shape == (3, 32, 32) and res.method == "rollout"


def _legrad_by_hand(vit, x, targets):
    xr = x.clone()
    logits, maps = vit_by_hand(vit, xr)
    score = logits.gather(1, targets[:, None]).sum()
    grads = torch.autograd.grad(score, maps)
    total = sum(torch.relu(g).mean(dim=(1, 2)) for g in grads)  # heads, queries
    return total[:, 1:].reshape(-1, 4, 4), grads


def test_legrad_gradients_equal_autograd_on_the_hand_written_forward(vit, x, no_leak):
    targets = torch.tensor([0, 2, 4])
    ref, grads = _legrad_by_hand(vit, x, targets)
    assert all(g.abs().max() > 0 for g in grads)
    with no_leak(vit):
        got = att_cam.legrad(vit, x, targets)
    assert got.shape == (3, 4, 4) and got.max() > 0
    torch.testing.assert_close(got, ref, atol=1e-7, rtol=1e-4)


def test_legrad_through_compute_with_frozen_parameters(vit, x, no_leak):
    targets = torch.tensor([1, 1, 3])
    ref, _ = _legrad_by_hand(vit, x, targets)
    with no_leak(vit):
        res = cam.compute(vit, x, method="legrad", target=targets.tolist())
    torch.testing.assert_close(res.raw, ref, atol=1e-7, rtol=1e-4)
    assert res.targets.tolist() == [1, 1, 3]
    other = cam.compute(vit, x, method="legrad", target=0)  # class-specific
    assert not torch.allclose(other.raw, res.raw)


def test_legrad_last_layers_only(vit, x):
    targets = torch.tensor([0, 1, 2])
    _, grads = _legrad_by_hand(vit, x, targets)
    ref = torch.relu(grads[-1]).mean(dim=(1, 2))[:, 1:].reshape(-1, 4, 4)
    got = att_cam.legrad(vit, x, targets, layers="*encoder_layer_2.self_attention")
    torch.testing.assert_close(got, ref, atol=1e-7, rtol=1e-4)


def test_class_token_attention_per_head(vit, x, no_leak):
    with torch.no_grad():
        _, maps = vit_by_hand(vit, x)
    with no_leak(vit):
        heads = att_cam.class_token_attention(vit, x, "encoder.layers.encoder_layer_1"
                                                       ".self_attention")
    assert heads.maps.shape == (3, 4, 4, 4) and heads.grid == (4, 4) and heads.extra == 1
    torch.testing.assert_close(heads.maps, maps[1][:, :, 0, 1:].reshape(3, 4, 4, 4))
    torch.testing.assert_close(heads.to_extra, maps[1][:, :, 0, 0])
    torch.testing.assert_close(heads.maps.sum(dim=(2, 3)) + heads.to_extra, torch.ones(3, 4))
    last = att_cam.class_token_attention(vit, x)  # default: the last attention
    assert last.layer == "encoder.layers.encoder_layer_2.self_attention"


def test_no_multihead_attention_is_a_clear_error():
    from hooklab.models.zoo import SimpleCNN

    model = SimpleCNN().eval()
    before = hook_counts(model)
    for method in ("rollout", "legrad"):
        with pytest.raises(AttentionError, match="SimpleCNN has no nn.MultiheadAttention"):
            cam.compute(model, torch.zeros(1, 3, 32, 32), method=method)
    assert hook_counts(model) == before
    assert all(p.requires_grad for p in model.parameters())


class _Tokens(nn.Module):
    """40 tokens from a 32×32 image with patch size 8: no grid of 4×4 patches fits."""

    patch_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 32 * 32, 40 * 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.flatten(1)).reshape(-1, 40, 8)
        t, _ = self.attn(t, t, t, need_weights=False)
        return self.head(t[:, 0])


def test_ungriddable_tokens_are_a_clear_error(no_leak):
    model = _Tokens().eval()
    with no_leak(model), pytest.raises(AttentionError, match="40 key tokens on a patch grid"):
        att_cam.rollout(model, torch.zeros(1, 3, 32, 32))
    with pytest.raises(AttentionError, match="4×4 grid"):
        att_cam.legrad(model, torch.zeros(1, 3, 32, 32))


def test_error_inside_attention_during_legrad_leaves_nothing(vit, x):
    before = hook_counts(vit)

    def boom(module, args, output):
        # weights returned to a caller that passed need_weights=False: inside the capture
        if isinstance(module, nn.MultiheadAttention) and output[1] is not None:
            raise RuntimeError("injected")

    handle = torch_module.register_module_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            cam.compute(vit, x, method="legrad", layer="conv_proj")
        with pytest.raises(RuntimeError, match="injected"):
            cam.compute(vit, x, method="rollout")
    finally:
        handle.remove()
    assert hook_counts(vit) == before
    assert all(p.requires_grad for p in vit.parameters())
    assert not vit.training


def test_bad_fusion_and_targets(vit, x):
    with pytest.raises(AttentionError, match="head_fusion"):
        att_cam.rollout(vit, x, head_fusion="median")
    with pytest.raises(AttentionError, match="out of range"):
        att_cam.legrad(vit, x, torch.tensor([0, 1, 9]))
    with pytest.raises(AttentionError, match="2 targets for 3 images"):
        att_cam.legrad(vit, x, torch.tensor([0, 1]))


class _Registers(nn.Module):
    """Patch 8 on 32 px (a 4×4 grid) with a class token and 2 register tokens in front."""

    patch_size = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv_proj = nn.Conv2d(3, 8, 8, stride=8)
        self.extra = nn.Parameter(torch.randn(1, 3, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.extra.expand(len(x), -1, -1), t], dim=1)  # (B, 3 + 16, 8)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t[:, 0])


def test_register_tokens_are_dropped_from_the_grid(no_leak):
    model = _Registers().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        t = model.conv_proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([model.extra.expand(2, -1, -1), t], dim=1)
        _, w = model.attn(t, t, t, average_attn_weights=False)
    with no_leak(model):
        heads = att_cam.class_token_attention(model, x)
        roll = att_cam.rollout(model, x)
    assert heads.extra == 3 and heads.grid == (4, 4)
    torch.testing.assert_close(heads.maps, w[:, :, 0, 3:].reshape(2, 2, 4, 4))
    ref = _numpy_rollout_rows([w.numpy()])[:, 0, 3:].reshape(2, 4, 4)
    np.testing.assert_allclose(roll.numpy(), ref, rtol=1e-4, atol=1e-6)


def _numpy_rollout_rows(maps: list[np.ndarray]) -> np.ndarray:
    out = []
    for b in range(maps[0].shape[0]):
        r = np.eye(maps[0].shape[-1])
        for a in maps:
            f = a[b].mean(0).astype(np.float64) + np.eye(a.shape[-1])
            r = (f / f.sum(axis=1, keepdims=True)) @ r
        out.append(r)
    return np.stack(out)
