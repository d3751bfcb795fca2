"""hooklab.recording.attention: captured weights equal attention computed by hand from q, k;
the caller's call convention is kept; no hook or changed call is left, also after an error."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import hooklab
from hooklab.core.errors import LayerNotFoundError
from hooklab.recording.attention import (
    AttentionError,
    attention,
    attention_modules,
    capture_attention,
)
from tests.conftest import hook_counts
from tests.vit_reference import mha_by_hand, tiny_vit, vit_by_hand

BLOCK0 = "encoder.layers.encoder_layer_0.self_attention"


@pytest.fixture
def vit():
    return tiny_vit()


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_weights_equal_attention_by_hand_per_head(vit, x, no_leak):
    inputs: dict[str, torch.Tensor] = {}
    grab = [vit.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: inputs.__setitem__(n, args[0].detach()))
        for n in attention_modules(vit)]
    try:
        with no_leak(vit), hooklab.attention(vit) as att, torch.no_grad():
            vit(x)
    finally:
        for h in grab:
            h.remove()
    assert att.names == tuple(attention_modules(vit)) and len(att.names) == 2
    for name in att.names:
        w = att.weights[name]
        assert w.shape == (2, 4, 17, 17)  # (B, heads, 1 + 4·4 tokens, same)
        with torch.no_grad():
            _, by_hand = mha_by_hand(vit.get_submodule(name), inputs[name])
        torch.testing.assert_close(w, by_hand, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 17))
        assert att.calls[name] == 1 and att.asked[name] == (False, True)  # torchvision's call
    # the heads differ: per-head maps, not an average repeated
    assert not torch.allclose(att.weights[BLOCK0][:, 0], att.weights[BLOCK0][:, 1])


def test_weights_match_the_hand_written_vit_and_output_is_unchanged(vit, x):
    with torch.no_grad():
        plain = vit(x)
        logits, maps = vit_by_hand(vit, x)
        att, out = capture_attention(vit, x)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    for name, a in zip(att.names, maps, strict=True):
        torch.testing.assert_close(att.weights[name], a, atol=1e-6, rtol=1e-5)
    assert att.stacked().shape == (2, 2, 4, 17, 17)


def test_the_callers_convention_is_restored():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    q = torch.randn(3, 5, 8)
    with torch.no_grad():
        avg = mha(q, q, q)                                       # default: averaged weights
        heads = mha(q, q, q, average_attn_weights=False)
        none = mha(q, q, q, need_weights=False)
        positional = mha(q, q, q, None, False)                   # need_weights positionally
        with attention(mha) as att:
            got_avg = mha(q, q, q)
            got_heads = mha(q, q, q, average_attn_weights=False)
            got_none = mha(q, q, q, need_weights=False)
            got_pos = mha(q, q, q, None, False)
    assert got_avg[1].shape == (3, 5, 5)
    torch.testing.assert_close(got_avg[1], avg[1])
    torch.testing.assert_close(got_heads[1], heads[1])
    assert none[1] is None and got_none[1] is None and got_pos[1] is None
    for a, b in ((got_avg, avg), (got_none, none), (got_pos, positional)):
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-5)
    assert att.calls[""] == 4 and att.asked[""] == (False, True)
    assert att.weights[""].shape == (3, 2, 5, 5)


def test_batch_second_layout():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()  # (T, B, E)
    q = torch.randn(5, 3, 8)
    with attention(mha) as att, torch.no_grad():
        out, w = mha(q, q, q, need_weights=False)
    assert w is None and out.shape == (5, 3, 8)
    with torch.no_grad():
        _, ref = mha(q, q, q, average_attn_weights=False)
    torch.testing.assert_close(att.weights[""], ref)


def test_no_hook_and_no_changed_call_after_an_error_inside_attention(vit, x):
    before = hook_counts(vit)

    def boom(module, args, output):
        if isinstance(module, nn.MultiheadAttention):
            raise RuntimeError("injected inside attention")

    handle = torch_module.register_module_forward_hook(boom)  # fires between our two hooks
    try:
        with pytest.raises(RuntimeError, match="injected"), attention(vit) as att:
            vit(x)
    finally:
        handle.remove()
    assert att.weights == {}
    assert hook_counts(vit) == before, "a hook was left behind"
    mha = vit.get_submodule(BLOCK0)
    q = torch.randn(1, 17, 32)
    with torch.no_grad():
        assert mha(q, q, q, need_weights=False)[1] is None        # the call is as before
        assert mha(q, q, q)[1].shape == (1, 17, 17)
    with attention(vit) as again, torch.no_grad():                # and a new capture works
        vit(x)
    assert again.calls == {n: 1 for n in again.names}


def test_error_raised_by_user_code_inside_the_block_removes_hooks(vit, x, no_leak):
    with no_leak(vit), pytest.raises(ValueError, match="mine"), attention(vit):
        raise ValueError("mine")


def test_named_module_that_is_not_attention_is_a_clear_error(vit):
    with pytest.raises(AttentionError) as exc, attention(vit, "encoder.layers.encoder_layer_0"):
        pass
    msg = str(exc.value)
    assert "EncoderBlock" in msg and "not an nn.MultiheadAttention" in msg
    assert f"'{BLOCK0}'" in msg                                   # the one inside it
    assert "encoder.layers.encoder_layer_1.self_attention" in msg  # and the model's
    with pytest.raises(LayerNotFoundError), attention(vit, "encoder.nope"):
        pass
    assert sum(sum(v) for v in hook_counts(vit).values()) == 0


def test_model_without_multihead_attention_is_a_clear_error():
    from hooklab.models.zoo import SimpleCNN

    with pytest.raises(AttentionError, match="SimpleCNN has no nn.MultiheadAttention"):
        with attention(SimpleCNN()):
            pass


def test_swin_attention_is_named_as_not_supported():
    from torchvision.models.swin_transformer import SwinTransformer

    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                           window_size=[4, 4], num_classes=3)
    with pytest.raises(AttentionError) as exc, attention(swin):
        pass
    assert "ShiftedWindowAttention" in str(exc.value) and "return no weights" in str(exc.value)


def test_only_the_named_modules_are_hooked(vit, x):
    with attention(vit, "*encoder_layer_1*self_attention") as att, torch.no_grad():
        vit(x)
    assert att.names == ("encoder.layers.encoder_layer_1.self_attention",)
    assert set(att.weights) == set(att.names)
    assert hook_counts(vit)[BLOCK0] == (0, 0, 0, 0, 0, 0)


def _grad_check(vit, x, target):
    """dS/dA from attention(grad=True) vs torch.autograd.grad on the hand-written forward."""
    xr = x.clone().requires_grad_(True)
    logits, maps = vit_by_hand(vit, xr)
    score = logits[torch.arange(len(x)), target].sum()
    *ref, ref_x = torch.autograd.grad(score, [*maps, xr])
    xh = x.clone().requires_grad_(True)
    with attention(vit, grad=True) as att:
        out = vit(xh)
    got_score = out[torch.arange(len(x)), target].sum()
    names = list(att.names)
    *got, got_x = torch.autograd.grad(got_score, [att.weights[n] for n in names] + [xh])
    return out, logits, ref, got, ref_x, got_x


def test_grad_mode_gives_dS_dA_as_autograd_does(vit, x, no_leak):
    target = torch.tensor([1, 3])
    with no_leak(vit):
        out, logits, ref, got, ref_x, got_x = _grad_check(vit, x, target)
    torch.testing.assert_close(out, logits, atol=1e-5, rtol=1e-5)  # values unchanged
    for g, r in zip(got, ref, strict=True):
        assert g.shape == (2, 4, 17, 17) and r.abs().max() > 0
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)
    # the probe adds no gradient anywhere else: dS/dx is autograd's on the plain model
    torch.testing.assert_close(got_x, ref_x, atol=1e-6, rtol=1e-4)


def test_grad_mode_under_no_grad_is_a_clear_error(vit, x, no_leak):
    with no_leak(vit), pytest.raises(AttentionError, match="needs grad mode"):
        with attention(vit, grad=True), torch.no_grad():
            vit(x)
