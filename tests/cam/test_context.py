"""The CamContext a model-calling method gets: each function against plain PyTorch."""

from __future__ import annotations

import pytest
import torch

from hooklab.cam import engine
from hooklab.models.zoo import SimpleCNN


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(3, 3, 32, 32)
    return model, x


def _ctx(model, x, layer="conv2"):
    with torch.no_grad():
        acts, _ = engine._capture(model, x, [layer], need_grad=False)
    return engine._context(model, x, layer, acts[layer].float(), None,
                           torch.tensor([1, 4, 7]), batch_size=2)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_logits_are_the_model_output(setup):
    model, x = setup
    ctx = _ctx(model, x)
    with torch.no_grad():
        torch.testing.assert_close(ctx.logits(x), model(x))


def test_with_layer_output_replaces_the_layer(setup):
    model, x = setup
    ctx = _ctx(model, x)
    # the unchanged activation gives the model's own logits; a zeroed channel what PyTorch gives
    acts = ctx.acts[1:2].repeat(3, 1, 1, 1)
    acts[1, 5] = 0
    acts[2] = 0
    out = ctx.with_layer_output(1, acts)  # batch_size 2: two chunks
    with torch.no_grad():
        h = torch.nn.functional.max_pool2d(torch.relu(model.conv1(x[1:2])), 2)
        a = model.conv2(h).repeat(3, 1, 1, 1)
        a[1, 5] = 0
        a[2] = 0
        z = torch.nn.functional.max_pool2d(torch.relu(a), 2)
        z = torch.nn.functional.max_pool2d(torch.relu(model.conv3(z)), 2)
        want = model.fc2(torch.relu(model.fc1(z.flatten(1))))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert _hooks(model) == 0


def test_capture_equals_autograd_and_keeps_a_graph_on_request(setup):
    model, x = setup
    ctx = _ctx(model, x)
    a, g = ctx.capture(x)
    leaf = model.conv2(torch.nn.functional.max_pool2d(torch.relu(model.conv1(x)), 2))
    leaf = leaf.detach().requires_grad_()
    z = torch.nn.functional.max_pool2d(torch.relu(leaf), 2)
    z = torch.nn.functional.max_pool2d(torch.relu(model.conv3(z)), 2)
    logits = model.fc2(torch.relu(model.fc1(z.flatten(1))))
    score = logits.gather(1, torch.tensor([[1], [4], [7]])).sum()
    (want,) = torch.autograd.grad(score, leaf)
    torch.testing.assert_close(a, leaf.detach())
    torch.testing.assert_close(g, want)
    assert not g.requires_grad
    a2, g2 = ctx.capture(x, create_graph=True)
    assert a2.requires_grad and g2.requires_grad
    (hvp,) = torch.autograd.grad(g2, a2, grad_outputs=a2.detach(), allow_unused=True)
    # above conv2 the SimpleCNN is piecewise linear (ReLU, max-pool, linear): its Hessian is 0
    assert hvp is None or int(torch.count_nonzero(hvp)) == 0
    assert _hooks(model) == 0


def test_capture_with_other_targets_and_bad_count(setup):
    model, x = setup
    ctx = _ctx(model, x)
    _, g0 = ctx.capture(x[:1], torch.tensor([2]))
    _, g1 = ctx.capture(x, torch.tensor([2, 2, 2]))
    torch.testing.assert_close(g0, g1[:1])
    with pytest.raises(engine.CamError, match="targets for"):
        ctx.capture(x, torch.tensor([1]))
    assert _hooks(model) == 0


def test_a_failing_forward_leaves_no_hook(setup):
    model, x = setup
    ctx = _ctx(model, x)
    with pytest.raises(RuntimeError):
        ctx.with_layer_output(0, torch.zeros(2, 7, 16, 16))  # wrong channel count
    assert _hooks(model) == 0


def test_register_adds_a_method_once():
    from hooklab.cam import methods

    spec = methods.CamMethod("test-only-cam", methods.gradcam, True, True, "Test CAM", "none")
    try:
        methods.register(spec, "Test_Only CAM")
        assert methods.method_name("test only cam") == "test-only-cam"
        assert methods.register(spec) is spec  # the same object again is fine
        with pytest.raises(ValueError, match="exists already"):
            methods.register(methods.CamMethod("test-only-cam", None, False, True, "x", "y"))
    finally:
        methods.METHODS.pop("test-only-cam", None)
        methods._ALIASES.pop("testonlycam", None)
