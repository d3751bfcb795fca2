"""Edits inside a recording: before/after events and the effect on upstream parameters."""

from __future__ import annotations

import pytest
import torch

import hooklab
from hooklab.core.edits import EditSpec, scale
from hooklab.models.zoo import SimpleCNN

UPSTREAM = ("conv1", "conv2")  # conv2's own parameters lie upstream of conv2's output
DOWNSTREAM = ("conv3", "fc1", "fc2")


def _param_grads(model, x, edits=None):
    model.zero_grad(set_to_none=True)
    with hooklab.record(model, layers="conv2", edits=edits) as rec:
        model(x)[:, 2].sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, rec.trace


@pytest.mark.parametrize("k", [0.5, 0.0, 0.25, -2.0, 3.0, -1.25])
def test_scale_at_conv2_scales_exactly_upstream(k, no_leak):
    torch.manual_seed(1)
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    with no_leak(model):
        base, _ = _param_grads(model, x)
        edited, trace = _param_grads(model, x, {"conv2": scale(k)})
    for name, g in base.items():
        layer = name.split(".")[0]
        if layer in UPSTREAM:
            if k in (0.5, 0.0, 0.25, -2.0):
                # a power-of-two factor is exact in float arithmetic: bit-for-bit k * g
                assert torch.equal(edited[name], k * g), name
            else:
                torch.testing.assert_close(edited[name], k * g, rtol=1e-4,
                                           atol=1e-6 * float(g.abs().max()))
        else:
            assert layer in DOWNSTREAM
            assert torch.equal(edited[name], g), name
    ev = trace.events
    before = ev[(ev.layer == "conv2") & (ev.role == "grad_output")]
    after = ev[(ev.layer == "conv2") & (ev.role == "edited")]
    assert len(before) == len(after) == 1
    assert before.iloc[0]["edit"] == after.iloc[0]["edit"] == scale(k).to_json()
    assert after.iloc[0]["seq"] == before.iloc[0]["seq"] + 1
    torch.testing.assert_close(trace.tensor(after.iloc[0]["key"]),
                               k * trace.tensor(before.iloc[0]["key"]))


def test_activation_edit_replaces_output(no_leak):
    torch.manual_seed(2)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    ref = model(x).detach()
    with no_leak(model):
        with hooklab.record(model, "conv1",
                            edits=[EditSpec("conv3", hooklab.core.edits.zero(), "activation")]) as rec:
            out = model(x)
    # conv3 zeroed -> fc input is relu(0) pooled = 0 -> output is fc2(relu(fc1.bias))
    expect = model.fc2(torch.relu(model.fc1.bias)).detach().expand_as(ref)
    torch.testing.assert_close(out.detach(), expect)
    assert not torch.allclose(out, ref)
    ev = rec.trace.events
    edited = ev[(ev.layer == "conv3") & (ev.role == "edited")]
    assert edited.iloc[0]["zero_frac"] == 1.0
    assert ev[(ev.layer == "conv3") & (ev.role == "output")].iloc[0]["zero_frac"] < 1.0


def test_param_grad_edit_clips(no_leak):
    torch.manual_seed(3)
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    base, _ = _param_grads(model, x)
    model.zero_grad(set_to_none=True)
    with no_leak(model):
        with hooklab.record(model, "fc1", param_grads=True,
                            edits=[EditSpec("fc1.weight", hooklab.core.edits.clip(1e-4),
                                            "param_grad")]) as rec:
            model(x)[:, 2].sum().backward()
    torch.testing.assert_close(model.fc1.weight.grad, base["fc1.weight"].clamp(-1e-4, 1e-4))
    torch.testing.assert_close(model.fc1.bias.grad, base["fc1.bias"])
    ev = rec.trace.events
    recorded = ev[(ev.role == "param_grad") & (ev.kind == "post_accumulate_grad")
                  & (ev["index"] == "weight")]
    assert recorded.iloc[0]["max"] <= 1e-4


def test_edit_registered_directly_on_a_tensor():
    """The seed's tensor hook: halving dz/dy gives x.grad = 96 instead of 192."""
    for k in (0.5, 1.0, 2.0, 0.1):
        x = torch.tensor([2.0], requires_grad=True)
        y = x ** 2
        z = y ** 3
        h = y.register_hook(scale(k))
        try:
            z.backward()
        finally:
            h.remove()
        assert x.grad.item() == pytest.approx(192 * k)


def test_edit_spec_parse_and_round_trip():
    spec = EditSpec.parse("conv2:activation=clip_norm(2.0)")
    assert spec.layer == "conv2" and spec.target == "activation"
    assert EditSpec.from_spec(spec.spec()) == spec
    with pytest.raises(hooklab.HooklabError, match="LAYER=EDIT"):
        EditSpec.parse("scale(0.5)")
    with pytest.raises(hooklab.HooklabError, match="target"):
        EditSpec("conv2", scale(1), "weights")
