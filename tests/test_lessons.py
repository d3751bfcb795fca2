"""The seed's hook lessons: seed numbers, and every backward kind checked against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hooklab import lessons
from hooklab.models import SimpleModel


def _seed_reference(seed: int = 42):
    """The seed's script, independently: manual_seed, SimpleModel(), randn, randn."""
    torch.manual_seed(seed)
    model = SimpleModel().eval()
    x1 = torch.randn(1, 1, 4, 4)
    x2 = torch.randn(1, 1, 4, 4)
    return model, x1, x2


@pytest.fixture
def built_models(monkeypatch):
    """Capture every model a lesson builds or copies, to check no hook is left on it."""
    built: list[torch.nn.Module] = []
    real_seed_model, real_fresh = lessons.seed_model, lessons._fresh

    def seed_model(seed: int = 42):
        m = real_seed_model(seed)
        built.append(m)
        return m

    def fresh(module):
        m = real_fresh(module)
        built.append(m)
        return m

    monkeypatch.setattr(lessons, "seed_model", seed_model)
    monkeypatch.setattr(lessons, "_fresh", fresh)
    return built


def _assert_no_hooks(models):
    from tests.conftest import total_hooks

    assert models, "the lesson built no model?"
    for m in models:
        assert total_hooks(m) == 0, "a lesson left a hook behind"


def test_callback_lesson():
    r = lessons.callback_lesson()
    assert (r.calculate, r.decorated, r.square) == (8, 8, 25)
    assert r.lines == ["result: 8", "result: 8"]


def test_forward_hook_lesson_matches_seed(built_models):
    r = lessons.forward_hook_lesson()
    model, x, _ = _seed_reference()
    assert tuple(r.input.shape) == (1, 1, 4, 4)
    assert tuple(r.output.shape) == (1, 2, 4, 4)
    assert torch.equal(r.input, x)
    with torch.no_grad():
        expect = F.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
        logits = model(x)
    torch.testing.assert_close(r.output, expect)
    torch.testing.assert_close(r.logits, logits)
    assert [m.shape for m in r.channel_maps] == [(4, 4), (4, 4)]
    torch.testing.assert_close(r.channel_maps[1], expect[0, 1])
    assert r.calls == 1
    assert r.lines[1] == "input shape: torch.Size([1, 1, 4, 4])"
    assert r.lines[2] == "output shape: torch.Size([1, 2, 4, 4])"
    assert not r.output.requires_grad
    _assert_no_hooks(built_models)


def test_forward_hook_lesson_keeps_global_rng():
    torch.manual_seed(7)
    a = torch.rand(3)
    torch.manual_seed(7)
    lessons.forward_hook_lesson()
    assert torch.equal(torch.rand(3), a)


def test_forward_hook_removed_after_exception(built_models, monkeypatch):
    def boom(self, x):
        raise RuntimeError("boom in fc")

    monkeypatch.setattr(torch.nn.Linear, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        lessons.forward_hook_lesson()
    _assert_no_hooks(built_models)


def test_backward_kinds_against_autograd(built_models):
    r = lessons.backward_hook_lesson()
    model, _, x = _seed_reference()
    xr = x.clone().requires_grad_(True)
    out = F.conv2d(xr, model.conv.weight, model.conv.bias, padding=1)
    loss = model.fc(F.relu(out).view(-1, 32)).sum()
    gx, gw, gb, gout = torch.autograd.grad(loss, [xr, model.conv.weight, model.conv.bias, out])
    assert r.loss == pytest.approx(loss.item())

    dep = r.kinds["backward"]  # the seed prints 3 grad_input entries and 1 grad_output
    assert len(dep.grad_input) == 3 and len(dep.grad_output) == 1
    assert "number of grad_input: 3" in dep.lines and "number of grad_output: 1" in dep.lines
    for got, ref in zip(dep.grad_input, (gx, gw, gb), strict=True):
        torch.testing.assert_close(got.value, ref)
    torch.testing.assert_close(dep.grad_output[0].value, gout)

    full = r.kinds["full_backward"]
    assert len(full.grad_input) == 1 and len(full.grad_output) == 1
    torch.testing.assert_close(full.grad_input[0].value, gx)
    torch.testing.assert_close(full.grad_output[0].value, gout)

    pre = r.kinds["full_backward_pre"]
    assert pre.grad_input == [] and len(pre.grad_output) == 1
    torch.testing.assert_close(pre.grad_output[0].value, gout)

    tens = r.kinds["tensor"]
    torch.testing.assert_close(tens.grad_output[0].value, gout)
    assert all(row["matches autograd"] for row in r.table().to_dict("records"))
    _assert_no_hooks(built_models)


def test_deprecated_hook_is_wrong_for_multi_op_modules():
    demos = {d.name: d for d in lessons.backward_hook_lesson().multi_op}
    two = demos["TwiceplusOne"]
    x = two.input.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad((x * 2 + 1).sum(), x)
    torch.testing.assert_close(two.reference, ref)
    torch.testing.assert_close(two.full, ref)  # [2, 2]
    torch.testing.assert_close(two.deprecated, ref / 2)  # [1, 1]: the add's input gradient
    assert two.full_matches and not two.deprecated_matches

    cr = demos["ConvReLU"]
    assert tuple(cr.deprecated.shape) == (1, 2, 4, 4)  # the conv output's shape, not x's
    assert tuple(cr.full.shape) == tuple(cr.input.shape) == (1, 1, 4, 4)
    assert cr.full_matches and not cr.deprecated_matches


@pytest.mark.parametrize("k", [0.5, 1.0, 0.0, -2.0, 0.3])
def test_tensor_hook_lesson_gives_192k(k):
    r = lessons.tensor_hook_lesson(k)
    assert r.dz_dy == 48.0  # 3 y^2 with y = 4
    assert r.dy_dx == 4.0
    assert r.dz_dy_edited == pytest.approx(48.0 * k)
    assert r.x_grad == pytest.approx(192.0 * k)
    x = torch.tensor([2.0], requires_grad=True)
    (plain,) = torch.autograd.grad((x ** 2) ** 3, x)
    assert r.x_grad_without_hook == float(plain) == 192.0
    assert r.x_grad == pytest.approx(r.dz_dy * k * r.dy_dx)


def test_tensor_hook_halving_is_96():
    r = lessons.tensor_hook_lesson(0.5)
    assert r.x_grad == 96.0
    assert r.lines == ["gradient seen: tensor([48.])", "x.grad: tensor([96.])"]
    assert r.chain_rule.endswith("48 · 0.5 · 4 = 96")


def test_forward_replace_lesson(built_models):
    r = lessons.forward_replace_lesson()
    model, x, _ = _seed_reference()
    with torch.no_grad():
        torch.testing.assert_close(r.logits, model(x))
        # independent: the model with the conv output replaced by zeros gives fc(relu(0)) = bias
        torch.testing.assert_close(r.logits_output_replaced[0], model.fc.bias)
        expect = F.conv2d(torch.zeros_like(x), model.conv.weight, model.conv.bias, padding=1)
    torch.testing.assert_close(r.conv_output_input_replaced, expect)
    assert r.output_replaced and r.input_replaced
    assert not torch.allclose(r.logits, r.logits_output_replaced)
    _assert_no_hooks(built_models)


def test_code_snippets_present():
    for key in ("forward", "backward", "multi_op", "tensor", "replace", "callback"):
        assert "hook" in lessons.CODE[key] or key == "callback"
    assert "finally" in lessons.CODE["forward"]
