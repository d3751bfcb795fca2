"""The seed's hook lessons: seed numbers, and every backward kind checked against autograd."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
import torch.nn.functional as F

from hooklab.models.zoo import SimpleModel
from hooklab.studies import lessons


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
    assert r.lines == ["result: 8", "result: 8", "25"]


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


# -- the code the page shows is the code that runs --------------------------------------------

def _run_snippet(source: str, namespace: dict | None = None) -> tuple[list[str], dict]:
    """Execute a shown snippet (in ``namespace``, else a fresh one); its printed lines."""
    ns = namespace if namespace is not None else _fresh_namespace()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecated hook's warning goes to stderr anyway
        exec(compile(source, "<snippet>", "exec"), ns)  # noqa: S102 - the project's own code
    return out.getvalue().splitlines(), ns


def _fresh_namespace() -> dict:
    """What the page's snippets assume is imported."""
    return {"torch": torch, "nn": torch.nn, "F": F, "SimpleModel": SimpleModel}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_callback_snippet_prints_the_lesson_lines(lang):
    printed, _ = _run_snippet(lessons.code("callback", lang))
    assert printed == lessons.callback_lesson(lang).lines


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_forward_snippet_prints_and_stores_what_the_lesson_did(lang):
    r = lessons.forward_hook_lesson(lang=lang)
    state = torch.random.get_rng_state()
    try:
        printed, ns = _run_snippet(lessons.code("forward", lang))
    finally:
        torch.random.set_rng_state(state)
    assert printed == r.lines
    assert len(ns["conv_outputs"]) == r.calls == 1
    torch.testing.assert_close(ns["x"], r.input)
    torch.testing.assert_close(ns["conv_outputs"][0], r.output)
    torch.testing.assert_close(ns["output"].detach(), r.logits)


def _after_forward(lang: str) -> dict:
    """The namespace after the forward snippet: the seed runs its sections in one script."""
    return _run_snippet(lessons.code("forward", lang))[1]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_backward_snippet_prints_what_each_kind_received(lang):
    r = lessons.backward_hook_lesson(lang=lang)
    shown = lessons.code("backward", lang)
    deprecated = "handle = model.conv.register_backward_hook(backward_hook)"
    full = "# handle = model.conv.register_full_backward_hook(backward_hook)"
    assert deprecated in shown and full in shown
    state = torch.random.get_rng_state()
    try:
        printed, ns = _run_snippet(shown, _after_forward(lang))
        assert printed == r.kinds["backward"].lines  # 3 grad_input entries, as the seed prints
        assert ns["loss"].item() == pytest.approx(r.loss)
        torch.testing.assert_close(ns["x"].detach(), r.x)
        # the documented alternative the snippet shows, on a fresh model
        swapped = shown.replace(deprecated, "# " + deprecated).replace(full, full[2:])
        printed, _ = _run_snippet(swapped, _after_forward(lang))
        assert printed == r.kinds["full_backward"].lines  # 1 grad_input entry
    finally:
        torch.random.set_rng_state(state)


def test_multi_op_snippet_prints_the_demo_values():
    demo = {d.name: d for d in lessons.backward_hook_lesson().multi_op}["TwiceplusOne"]
    printed, _ = _run_snippet(lessons.code("multi_op"))
    assert printed == [f"grad_input[0]: {demo.deprecated}", f"grad_input[0]: {demo.full}",
                       f"{(demo.reference,)}"]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("k", [0.5, 1.0, 0.25, -2.0, 0.3])
def test_tensor_snippet_prints_the_lesson_lines(k, lang):
    r = lessons.tensor_hook_lesson(k, lang=lang)
    printed, ns = _run_snippet(lessons.code("tensor", lang, k=k))
    assert ns["k"] == k
    assert printed == r.lines
    assert float(ns["x"].grad) == r.x_grad


def test_replace_snippet_shows_the_replacement():
    r = lessons.forward_replace_lesson()
    state = torch.random.get_rng_state()
    try:
        printed, ns = _run_snippet(lessons.code("replace"), _after_forward("en"))
    finally:
        torch.random.set_rng_state(state)
    assert printed == [f"logits == fc.bias: {r.output_replaced}",
                       f"conv output == conv.bias everywhere: {r.input_replaced}"]
    torch.testing.assert_close(ns["logits"].detach(), r.logits_output_replaced)
    torch.testing.assert_close(ns["conv_out"].detach(), r.conv_output_input_replaced)


def test_code_in_each_language_differs_only_in_printed_words():
    for name in lessons.CODE:
        en, zh = lessons.code(name, "en"), lessons.code(name, "zh")
        assert en == lessons.CODE[name]
        back = zh
        for key, words in sorted(lessons.SAYS["zh"].items(), key=lambda kv: -len(kv[1])):
            back = back.replace(words, lessons.SAYS["en"][key])
        assert back == en
        assert (zh != en) == (name != "multi_op" and name != "replace")
    assert "原始梯度: " in lessons.code("tensor", "zh")
    assert "x的梯度: " in lessons.code("tensor", "zh")
    with pytest.raises(ValueError, match="language"):
        lessons.code("tensor", "fr")


def test_chinese_lines_are_the_seeds():
    assert lessons.tensor_hook_lesson(0.5, lang="zh").lines == \
        ["原始梯度: tensor([48.])", "x的梯度: tensor([96.])"]
    fwd = lessons.forward_hook_lesson(lang="zh").lines
    assert fwd[1:] == ["输入形状: torch.Size([1, 1, 4, 4])", "输出形状: torch.Size([1, 2, 4, 4])"]
    dep = lessons.backward_hook_lesson(lang="zh").kinds["backward"].lines
    assert dep[1:] == ["输入梯度数量: 3", "输出梯度数量: 1"]
    assert lessons.callback_lesson("zh").lines == ["计算结果是: 8", "计算结果是: 8", "25"]
    with pytest.raises(ValueError, match="language"):
        lessons.tensor_hook_lesson(0.5, lang="fr")
