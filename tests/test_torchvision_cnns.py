"""Every torchvision CNN of the zoo records: each leaf module's output gradient equals the
autograd value, and every hook kind either works or raises the explained HookKindError.

Reference: a deep copy of the model with ``inplace=False`` on every module that has it, plain
forward hooks that keep each leaf's output per call (and hand a clone downstream, so functional
in-place ops such as DenseNet's ``F.relu(..., inplace=True)`` cannot touch the kept tensor),
then ``torch.autograd.grad`` of the same loss. Random weights, 1x3x64x64 inputs. Two models are
compared tensor by tensor; the four big ones by statistics (norm, mean, min, max) to stay fast.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hooklab
from hooklab.errors import HookKindError
from hooklab.models import TORCHVISION_MODELS, get_model
from hooklab.recorder import HOOK_KINDS

pytestmark = pytest.mark.slow

MODELS = ("resnet18", "resnet50", "vgg11_bn", "mobilenet_v3_small", "densenet121",
          "efficientnet_b0")
FULL_TENSORS = {"mobilenet_v3_small", "efficientnet_b0"}
TARGET = 3


def test_the_zoo_is_what_this_file_covers():
    assert set(TORCHVISION_MODELS) == set(MODELS)


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request) -> tuple[str, nn.Module]:
    """Each model built once (pytest groups the tests by it), random weights, eval mode."""
    return request.param, get_model(request.param, seed=0, num_classes=10).eval()


def _reference_grads(model: nn.Module, names: list[str], x: torch.Tensor
                     ) -> dict[tuple[str, int], torch.Tensor]:
    """d loss / d (output of each leaf at each call), by plain autograd on an out-of-place copy."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    mods = dict(ref.named_modules())
    kept: list[tuple[str, int, torch.Tensor]] = []
    calls: dict[str, int] = {}

    def keep(name: str):
        def hook(m, args, out):
            c = calls.get(name, 0)
            calls[name] = c + 1
            kept.append((name, c, out))
            return out.clone()
        return hook

    handles = [mods[n].register_forward_hook(keep(n)) for n in names]
    try:
        loss = ref(x)[:, TARGET].sum()
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(loss, [t for _, _, t in kept])
    return {(n, c): g for (n, c, _), g in zip(kept, grads)}


def test_every_leaf_output_gradient_equals_autograd(zoo_model, no_leak):
    name, model = zoo_model
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    full = name in FULL_TENSORS
    with no_leak(model):
        with hooklab.record(model, inputs=False, keep_tensors=full, max_bytes=None) as rec:
            rec.run(x, target=TARGET)
    ref = _reference_grads(model, rec.layers, x)
    ev = rec.trace.events
    go = ev[ev.role == "grad_output"]
    # every leaf that ran has an output gradient, once per call, and nothing else
    assert sorted(zip(go.layer, go.call)) == sorted(ref), name
    ran = set(ev[ev.role == "output"].layer)  # EfficientNet has StochasticDepth leaves never called
    assert set(go.layer) == ran and len(ran) > 0.9 * len(rec.layers)
    for (layer, call), g in ref.items():
        row = go[(go.layer == layer) & (go.call == call)].iloc[0]
        assert row["shape"] == "x".join(map(str, g.shape)), (layer, call)
        if full:
            torch.testing.assert_close(rec.trace.tensor(row["key"]), g, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, lc=(layer, call): f"{lc}: {m}")
        else:
            scale = float(g.abs().max()) + 1e-12
            assert row["norm"] == pytest.approx(float(torch.linalg.vector_norm(g)), rel=1e-4,
                                                abs=1e-7 * scale), (layer, call)
            for col, val in (("mean", g.mean()), ("min", g.min()), ("max", g.max())):
                assert row[col] == pytest.approx(float(val), rel=1e-4, abs=1e-5 * scale), \
                    (layer, call, col)


def _first(model: nn.Module, kind: type | tuple[type, ...]) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, kind))


def _last_linear(model: nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _first_inplace_activation(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules()
                if not any(m.children()) and getattr(m, "inplace", False))


def test_every_hook_kind_works_or_is_explained(zoo_model, no_leak):
    """All seven kinds on the classifier and the first conv work and see the right gradient;
    full backward hooks on a module whose output (or input) is changed in place afterwards are
    refused with an explanation naming the safe alternative; so is a post-accumulate-grad hook
    on a module without parameters."""
    name, model = zoo_model
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    fc, conv = _last_linear(model), _first(model, nn.Conv2d)
    bn, act = _first(model, nn.BatchNorm2d), _first_inplace_activation(model)
    modern = [k for k in HOOK_KINDS if k != "backward"]
    with no_leak(model):
        with hooklab.record(model, [], hooks={fc: modern, conv: ["backward", "forward_pre",
                                                                 "forward", "tensor",
                                                                 "post_accumulate_grad"]}) as rec:
            out = rec.run(x, target=TARGET)
    ev = rec.trace.events
    assert set(ev[ev.layer == fc].kind) == set(modern)
    assert set(ev[ev.layer == conv].kind) == set(HOOK_KINDS) - {"full_backward_pre",
                                                                 "full_backward"}
    onehot = torch.zeros_like(out)
    onehot[:, TARGET] = 1
    for kind in ("tensor", "full_backward_pre", "full_backward"):  # d loss / d logits
        torch.testing.assert_close(rec.trace.find(layer=fc, kind=kind, role="grad_output"), onehot)
    torch.testing.assert_close(rec.trace.find(layer=fc, role="output"), out)
    w_grad = dict(model.named_parameters())[f"{fc}.weight"].grad
    torch.testing.assert_close(
        rec.trace.find(layer=fc, kind="post_accumulate_grad", index="weight"), w_grad)
    # the deprecated hook's grad_output on the first conv equals the tensor hook's
    torch.testing.assert_close(rec.trace.find(layer=conv, kind="backward", role="grad_output"),
                               rec.trace.find(layer=conv, kind="tensor", role="grad_output"))
    # refused kinds: each a HookKindError with the reason and the alternative
    for layer, kind, words in ((bn, "full_backward", ("inplace", "tensor")),
                               (act, "full_backward", ("inplace", "tensor")),
                               (act, "full_backward_pre", ("inplace", "tensor")),
                               (act, "post_accumulate_grad", ("no trainable parameters",
                                                              "tensor"))):
        with no_leak(model):
            with pytest.raises(HookKindError) as err:
                with hooklab.record(model, [], hooks={layer: [kind]}) as rec:
                    rec.run(x, target=TARGET)
        msg = str(err.value)
        assert all(w in msg for w in words), (name, layer, kind, msg)
