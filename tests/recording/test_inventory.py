"""hooklab.hooks_on: every hook each PyTorch API registers is found (kind, module, origin), none
after removal; the seed's GradCAM run twice is reported with four leaked hooks on conv3."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_full_backward_hook,
)

import hooklab
from hooklab.models.zoo import SimpleCNN, SimpleModel
from hooklab.recording.inventory import GLOBAL, INVENTORY_COLUMNS, INVENTORY_KINDS, hooks_on
from hooklab.studies.hook_doctor import SeedGradCAM, seed_gradcam_twice


def _noop(*args, **kwargs):
    return None


def _register_every_kind(model: SimpleModel) -> list[tuple[object, str, str, str]]:
    """One hook of each kind the inventory knows; (handle, module, target, kind) each."""
    conv, fc = model.conv, model.fc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dep = fc.register_backward_hook(_noop)
    return [
        (conv.register_forward_pre_hook(_noop), "conv", "module", "forward_pre"),
        (conv.register_forward_hook(_noop), "conv", "module", "forward"),
        (conv.register_full_backward_pre_hook(_noop), "conv", "module", "full_backward_pre"),
        (conv.register_full_backward_hook(_noop), "conv", "module", "full_backward"),
        (dep, "fc", "module", "backward"),
        (conv.register_state_dict_pre_hook(_noop), "conv", "module", "state_dict_pre"),
        (conv.register_state_dict_post_hook(_noop), "conv", "module", "state_dict"),
        (conv.register_load_state_dict_pre_hook(_noop), "conv", "module", "load_state_dict_pre"),
        (conv.register_load_state_dict_post_hook(_noop), "conv", "module",
         "load_state_dict_post"),
        (conv.weight.register_hook(_noop), "conv", "param:weight", "tensor"),
        (fc.bias.register_post_accumulate_grad_hook(_noop), "fc", "param:bias",
         "post_accumulate_grad"),
        (model.register_forward_hook(_noop), "", "module", "forward"),
    ]


def test_every_api_is_found_with_kind_module_and_origin():
    model = SimpleModel()
    assert hooks_on(model).empty
    registered = _register_every_kind(model)
    inv = hooks_on(model, include_global=False)
    assert list(inv.columns) == list(INVENTORY_COLUMNS)
    got = sorted(zip(inv["module"], inv["target"], inv["kind"], strict=True))
    assert got == sorted((m, tg, k) for _, m, tg, k in registered)
    assert set(inv["kind"]) <= set(INVENTORY_KINDS)
    assert set(inv["function"]) == {f"{__name__}._noop"}
    line = _noop.__code__.co_firstlineno
    assert set(inv["where"]) == {f"{__file__}:{line}"}
    assert not inv["looks_leaked"].any()  # every handle is alive in `registered`
    ids = {h.id for h, *_ in registered}
    assert set(inv["hook_id"]) == ids
    for h, *_ in registered:
        h.remove()
    assert hooks_on(model).empty


def test_global_hooks_are_listed_and_removed():
    model = SimpleModel()
    h1 = register_module_forward_hook(_noop)
    h2 = register_module_full_backward_hook(_noop)
    try:
        inv = hooks_on(model)
        glob = inv[inv["module"] == GLOBAL]
        assert sorted(glob["kind"]) == ["forward", "full_backward"]
        assert hooks_on(model, include_global=False).empty
    finally:
        h1.remove()
        h2.remove()
    assert hooks_on(model).empty


def test_dropped_handle_looks_leaked_kept_handle_does_not():
    model = SimpleModel()

    def register_and_forget():
        def closure(m, i, o):
            return None
        model.conv.register_forward_hook(closure)  # handle dropped

    register_and_forget()
    kept = model.fc.register_forward_hook(_noop)
    inv = hooks_on(model).set_index("module")
    assert bool(inv.loc["conv", "looks_leaked"]) is True
    assert "has returned" in inv.loc["conv", "reason"]
    assert bool(inv.loc["fc", "looks_leaked"]) is False
    kept.remove()
    model.conv._forward_hooks.clear()
    assert hooks_on(model).empty


def test_active_recorder_hooks_are_listed_not_leaked_and_gone_after(no_leak):
    model = SimpleModel()
    x = torch.randn(1, 1, 4, 4)
    with no_leak(model):
        with hooklab.record(model, ["conv", "fc"], hooks={"conv": ["full_backward"]},
                            param_grads=True) as rec:
            inv = hooks_on(model)
            rec.run(x, "sum")
        assert {"forward_pre", "forward", "full_backward", "post_accumulate_grad"} <= set(
            inv["kind"])
        assert set(inv["module"]) >= {"conv", "fc"}
        assert not inv["looks_leaked"].any()
        assert hooks_on(model).empty


def test_inventory_after_an_exception_inside_record_is_empty(no_leak):
    model = SimpleModel()
    with no_leak(model), pytest.raises(ZeroDivisionError):
        with hooklab.record(model, "conv"):
            assert not hooks_on(model).empty
            raise ZeroDivisionError
    assert hooks_on(model).empty


def test_seed_gradcam_run_twice_leaves_four_leaked_hooks_on_conv3():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = SeedGradCAM(model, model.conv3)
        first.generate_cam(x)
        grad_cam = SeedGradCAM(model, model.conv3)  # the cell run again
        grad_cam.generate_cam(x)
        # the old object's hooks still fire: its activations are refreshed by the new forward
        stale = first.activations
        grad_cam.generate_cam(x + 1)
        assert first.activations is not stale
    del first
    gc.collect()
    inv = hooks_on(model)
    conv3 = inv[inv["module"] == "conv3"]
    assert len(conv3) == 4
    assert sorted(conv3["kind"]) == ["backward", "backward", "forward", "forward"]
    assert conv3["looks_leaked"].all()
    assert conv3["function"].str.contains("register_hooks.<locals>").all()
    assert set(inv["module"]) == {"conv3"}
    model.conv3._forward_hooks.clear()
    model.conv3._backward_hooks.clear()
    assert hooks_on(model).empty


def test_library_demo_runs_on_a_copy(no_leak):
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    with no_leak(model):
        inv = seed_gradcam_twice(model, torch.randn(1, 3, 32, 32))
    assert len(inv) == 4 and inv["looks_leaked"].all()
    assert set(inv["module"]) == {"conv3"}


def test_not_a_module_is_a_clear_type_error():
    with pytest.raises(TypeError, match="nn.Module"):
        hooks_on(nn.Linear(2, 2).weight)  # type: ignore[arg-type]
