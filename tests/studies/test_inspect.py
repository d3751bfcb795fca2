"""hooklab.studies.inspect: the Inspector's Run without Streamlit, checked against autograd."""

from __future__ import annotations

import torch

from hooklab.models.zoo import SimpleCNN, seed_model
from hooklab.studies import inspect


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_run_records_edit_prediction_and_leaves_no_hook():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    trace = inspect.run(model, x, layers=["conv2", "conv3"], kinds=["full_backward"],
                        edits="conv2=scale(0.5)", class_names=[f"c{i}" for i in range(10)],
                        meta={"page": "inspector"})
    with torch.no_grad():
        pred = int(model(x)[0].argmax())
    assert trace.meta["prediction"] == pred and trace.meta["prediction_name"] == f"c{pred}"
    assert trace.meta["edits_text"] == "conv2=scale(0.5)"
    assert trace.meta["page"] == "inspector"
    ev = trace.events
    assert set(ev["layer"]) >= {"conv2", "conv3"} and "full_backward" in set(ev["kind"])
    # the edit halves conv2's output gradient: after = 0.5 × before
    conv2 = ev[ev["layer"] == "conv2"]
    before = trace.tensor(conv2[conv2["role"] == "grad_output"]["key"].iloc[0])
    after = trace.tensor(conv2[conv2["role"] == "edited"]["key"].iloc[0])
    torch.testing.assert_close(after, 0.5 * before)
    assert _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_seed_model_gradient_matches_autograd():
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    trace = inspect.record_seed_model(x, 0.5, meta={"k": 0.5})
    assert trace.meta["k"] == 0.5
    ev = trace.events
    got = trace.tensor(ev[(ev["layer"] == "conv") & (ev["role"] == "param_grad")
                          & (ev["index"] == "weight")]["key"].iloc[0])
    # the same in plain PyTorch: conv output gradient halved by a tensor hook
    model = seed_model(42)
    out = model.conv(x)
    out.register_hook(lambda g: g * 0.5)
    y = out
    for name, m in model.named_children():
        if name != "conv":
            y = m(y.flatten(1) if isinstance(m, torch.nn.Linear) else y)
    (ref,) = torch.autograd.grad(y.sum(), [model.conv.weight])
    torch.testing.assert_close(got, ref)


def test_default_event_and_partner():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    trace = inspect.run(model, x, layers=["conv2"], edits="conv2=scale(0.5)")
    ev = trace.events
    first_out = int(ev.index[(ev["role"] == "output") & (ev["key"] != "")][0])
    assert inspect.default_event(ev) == first_out
    last = int(ev["seq"].iloc[-1])
    assert inspect.default_event(ev, last) == len(ev) - 1
    row = ev[ev["role"] == "edited"].iloc[0]
    act = inspect.partner(trace, row, "output")
    grad = inspect.partner(trace, row, "grad_output")  # the value before the edit
    out = ev[(ev["layer"] == "conv2") & (ev["role"] == "output")]["key"].iloc[0]
    torch.testing.assert_close(act, trace.tensor(out))
    assert act.shape == grad.shape
    torch.testing.assert_close(trace.tensor(row["key"]), 0.5 * grad)
    assert inspect.partner(trace, row, "no_such_role") is None
