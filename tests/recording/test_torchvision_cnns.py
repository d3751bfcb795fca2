"""Every torchvision CNN of the zoo records: each leaf module's output gradient equals the
autograd value, and every hook kind either works or raises the explained HookKindError.

Reference: a deep copy of the model with ``inplace=False`` on every module that has it, plain
forward hooks that keep each leaf's output per call (and hand a clone downstream, so functional
in-place ops such as DenseNet's ``F.relu(..., inplace=True)`` cannot touch the kept tensor),
then ``torch.autograd.grad`` of the same loss. Random weights, 1x3x32x32 inputs for the
gradient comparison (whole tensors: output, input and parameter gradients of every leaf), 64x64
for the hook kinds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hooklab
from hooklab.core.errors import HookKindError
from hooklab.models.zoo import TORCHVISION_MODELS, get_model
from hooklab.recording.recorder import HOOK_KINDS

pytestmark = pytest.mark.slow

MODELS = ("resnet18", "resnet50", "vgg11_bn", "mobilenet_v3_small", "densenet121",
          "efficientnet_b0")
TARGET = 3


def test_the_zoo_is_what_this_file_covers():
    assert set(TORCHVISION_MODELS) - {"vit_b_16", "swin_t"} == set(MODELS)  # ViTs: test_vit.py


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request) -> tuple[str, nn.Module]:
    """Each model built once (pytest groups the tests by it), random weights, eval mode."""
    return request.param, get_model(request.param, seed=0, num_classes=10).eval()


def _reference_grads(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, dict]:
    """Plain autograd on an out-of-place copy: d loss / d (output of each leaf at each call,
    each tensor input of each leaf at each call, every parameter, the input ``x``)."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    mods = dict(ref.named_modules())
    outs: list[tuple[tuple[str, int], torch.Tensor]] = []
    ins: list[tuple[tuple[str, int, str], torch.Tensor]] = []
    calls: dict[str, int] = {}

    def keep_inputs(name: str):
        def hook(m, args):
            c = calls.get(name, 0)
            calls[name] = c + 1
            ins.extend(((name, c, str(i)), a) for i, a in enumerate(args)
                       if isinstance(a, torch.Tensor) and a.requires_grad)
        return hook

    def keep_output(name: str):
        def hook(m, args, out):
            outs.append(((name, calls[name] - 1), out))
            return out.clone()  # downstream in-place ops cannot touch the kept tensor
        return hook

    handles = [mods[n].register_forward_pre_hook(keep_inputs(n)) for n in names]
    handles += [mods[n].register_forward_hook(keep_output(n)) for n in names]
    x = x.clone().requires_grad_()
    try:
        loss = ref(x)[:, TARGET].sum()
    finally:
        for h in handles:
            h.remove()
    params = dict(ref.named_parameters())
    wrt = [t for _, t in outs] + [t for _, t in ins] + list(params.values()) + [x]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    k, j = len(outs), len(outs) + len(ins)
    return {"out": {key: g for (key, _), g in zip(outs, grads[:k])},
            "in": {key: g for (key, _), g in zip(ins, grads[k:j]) if g is not None},
            "param": dict(zip(params, grads[j:-1])), "x": grads[-1]}


def _close(got: torch.Tensor, want: torch.Tensor, what: object) -> None:
    """Whole tensors, float32 tolerances relative to the tensor's own scale (another CPU may
    round each sum differently)."""
    scale = float(want.abs().max()) + 1e-30
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5 * scale,
                               msg=lambda m: f"{what}: {m}")


def test_every_gradient_equals_autograd(zoo_model, no_leak):
    """Each leaf's output gradient (per call), each leaf's input gradients, every parameter's
    gradient and the input's gradient: the recorded tensors equal plain autograd's."""
    name, model = zoo_model
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with no_leak(model):
        with hooklab.record(model, inputs=False, param_grads=True, input_grads=True,
                            max_bytes=None) as rec:
            rec.run(x, target=TARGET)
    model.zero_grad(set_to_none=True)
    ref = _reference_grads(model, rec.layers, x)
    trace, ev = rec.trace, rec.trace.events
    assert not trace.truncated and (ev.key != "").all()
    # output gradients: every leaf that ran, once per call, and nothing else
    go = ev[ev.role == "grad_output"]
    assert sorted(zip(go.layer, go.call)) == sorted(ref["out"]), name
    ran = set(ev[ev.role == "output"].layer)  # EfficientNet has StochasticDepth leaves never called
    assert set(go.layer) == ran and len(ran) > 0.9 * len(rec.layers)
    rows = {(lay, c): (shape, key) for lay, c, shape, key in zip(go.layer, go.call, go["shape"],
                                                                  go.key)}
    for (layer, call), g in ref["out"].items():
        shape, key = rows[layer, call]
        assert shape == "x".join(map(str, g.shape)), (layer, call)
        _close(trace.tensor(key), g, (name, layer, call))
    # input gradients of every leaf (the first leaf's is d loss / d x)
    gi = ev[ev.role == "grad_input"]
    assert sorted(zip(gi.layer, gi.call, gi["index"])) == sorted(ref["in"]), name
    keys = dict(zip(zip(gi.layer, gi.call, gi["index"]), gi.key))
    for (layer, call, idx), g in ref["in"].items():
        _close(trace.tensor(keys[layer, call, idx]), g, (name, layer, call, "input", idx))
    first = gi[gi.layer == rec.layers[0]]
    assert len(first) == 1
    _close(trace.tensor(first.iloc[0]["key"]), ref["x"], (name, "x"))
    # parameter gradients: one event per trainable parameter
    pg = ev[ev.role == "param_grad"]
    assert sorted(pg.layer + "." + pg["index"]) == sorted(ref["param"]), name
    keys = dict(zip(pg.layer + "." + pg["index"], pg.key))
    for full, g in ref["param"].items():
        _close(trace.tensor(keys[full]), g, (name, full))


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
