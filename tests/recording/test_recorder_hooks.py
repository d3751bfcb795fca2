"""Hook kinds, hook hygiene after exceptions, layer selection, budget, call indices, threads."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
import torchvision
from torch import nn

import hooklab
from hooklab.core.errors import EditError, HookKindError, LayerNotFoundError
from hooklab.models.zoo import SimpleCNN, SimpleModel
from hooklab.recording.recorder import HOOK_KINDS, EditSpec
from tests.conftest import total_hooks


class Boom(Exception):
    pass


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return SimpleCNN().eval()


def test_no_hook_left_after_success(cnn, no_leak):
    with no_leak(cnn):
        with hooklab.record(cnn, param_grads=True, input_grads=True,
                            hooks={"conv1": [k for k in HOOK_KINDS if k != "backward"],
                                   "conv2": ["backward"]}) as rec:
            assert total_hooks(cnn) > 0
            rec.run(torch.randn(1, 3, 32, 32))
    assert total_hooks(cnn) == 0


def test_no_hook_left_after_exception_in_forward(cnn, no_leak):
    def explode(m, a, o):
        raise Boom("forward")
    h = cnn.conv2.register_forward_hook(explode)  # the user's own hook survives
    try:
        with no_leak(cnn):
            with pytest.raises(Boom):
                with hooklab.record(cnn, param_grads=True, hooks={"conv3": ["full_backward"]}):
                    cnn(torch.randn(1, 3, 32, 32))
        assert len(cnn.conv2._forward_hooks) == 1
    finally:
        h.remove()


def test_no_hook_left_after_exception_in_backward(cnn, no_leak):
    class Fail(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise Boom("backward")

    with no_leak(cnn):
        with pytest.raises(Boom):
            with hooklab.record(cnn, param_grads=True, input_grads=True):
                Fail.apply(cnn(torch.randn(1, 3, 32, 32))).sum().backward()


def test_no_hook_left_after_exception_in_edit(cnn, no_leak):
    bad = hooklab.core.edits.channel_mask([500])  # raises inside the tensor hook during backward
    with no_leak(cnn):
        with pytest.raises(EditError, match="out of range"):
            with hooklab.record(cnn, edits={"conv2": bad}) as rec:
                rec.run(torch.randn(1, 3, 32, 32))


def test_tensor_hooks_removed_from_a_graph_that_outlives_the_block(cnn):
    """The recorder's tensor hooks (output gradient, input gradient, graph marker) leave the
    tensors at exit, so the living graph keeps no hook and no reference to the recorder."""
    kept: dict[str, torch.Tensor] = {}
    h = cnn.conv1.register_forward_hook(lambda m, a, o: kept.setdefault("conv1", o))
    try:
        with hooklab.record(cnn, "conv1", input_grads=True) as rec:
            x = torch.randn(1, 3, 32, 32, requires_grad=True)
            out = cnn(x)
            tensors = {"conv1 output": kept["conv1"], "model output": out, "input": x}
            assert all(t._backward_hooks for t in tensors.values())  # what exit must remove
    finally:
        h.remove()
    for what, t in tensors.items():
        assert not t._backward_hooks, what
    trace, n = rec.trace, len(rec.trace)
    alive = weakref.ref(rec)
    del rec
    gc.collect()
    assert alive() is None, "the graph keeps the recorder alive"
    out.sum().backward()  # after the block: no hook may fire any more
    assert len(trace) == n and x.grad is not None


def test_module_backward_hooks_in_a_living_graph_do_not_keep_the_recorder(cnn):
    """PyTorch keeps a module's backward hooks in the graph built while they were registered;
    those of a finished recording hold it only weakly and do nothing."""
    kinds = {"conv2": ["full_backward", "full_backward_pre"], "conv3": ["backward"],
             "fc1": ["post_accumulate_grad"]}
    with hooklab.record(cnn, "conv1", param_grads=True, hooks=kinds) as rec:
        out = cnn(torch.randn(1, 3, 32, 32))
    trace, n = rec.trace, len(rec.trace)
    alive = weakref.ref(rec)
    del rec
    gc.collect()
    assert alive() is None, "the graph keeps the recorder alive"
    out.sum().backward()
    assert len(trace) == n and total_hooks(cnn) == 0


def test_layers_by_name_glob_type_and_unknown():
    model = torchvision.models.resnet18(weights=None)
    with hooklab.record(model, layers="layer4.*.conv?") as rec:
        pass
    assert rec.layers == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    with hooklab.record(model, layers=["fc", nn.BatchNorm2d]) as rec:
        pass
    assert rec.layers[-1] == "fc" and len(rec.layers) == 21
    with hooklab.record(model, layers="Linear") as rec:
        pass
    assert rec.layers == ["fc"]
    with pytest.raises(LayerNotFoundError, match="layer4.0.conv1") as err:
        hooklab.record(model, layers="layer4.0.cnv1")
    assert isinstance(err.value, ValueError)
    assert total_hooks(model) == 0


def test_module_called_twice_gives_two_calls(no_leak):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    torch.manual_seed(0)
    m = Twice()
    x = torch.randn(2, 3)
    with no_leak(m):
        with hooklab.record(m, "lin") as rec:
            m(x).sum().backward()
    ev = rec.trace.events
    outs = ev[ev.role == "output"]
    assert list(outs.call) == [0, 1]
    first = m.lin(x)
    torch.testing.assert_close(rec.trace.find(role="output", call=0), first.detach())
    torch.testing.assert_close(rec.trace.find(role="output", call=1),
                               m.lin(torch.tanh(first)).detach())
    assert sorted(ev[ev.role == "grad_output"].call) == [0, 1]


def test_every_hook_kind_on_the_seed_conv(no_leak):
    torch.manual_seed(42)
    m = SimpleModel()
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    modern = [k for k in HOOK_KINDS if k != "backward"]
    with no_leak(m):
        with hooklab.record(m, layers="fc", hooks={"conv": modern}) as rec:
            m(x).sum().backward()
        w_grad = m.conv.weight.grad.clone()
        with hooklab.record(m, layers="fc", hooks={"conv": ["backward"]}) as rec_old:
            m(x).sum().backward()
        with pytest.raises(HookKindError, match="two runs"):
            with hooklab.record(m, hooks={"conv": ["full_backward", "backward"]}):
                pass
    assert m.conv._is_full_backward_hook is None  # PyTorch's flag restored too
    ev = rec.trace.events
    conv = ev[ev.layer == "conv"]
    assert set(conv.kind) == set(modern)
    # full backward hook: grad_output equals the tensor hook's gradient
    full = rec.trace.find(layer="conv", kind="full_backward", role="grad_output")
    tens = rec.trace.find(layer="conv", kind="tensor", role="grad_output")
    pre = rec.trace.find(layer="conv", kind="full_backward_pre", role="grad_output")
    torch.testing.assert_close(full, tens)
    torch.testing.assert_close(pre, tens)
    # full backward grad_input is d(out.sum())/dx
    (gx,) = torch.autograd.grad(m(x).sum(), x)
    torch.testing.assert_close(
        rec.trace.find(layer="conv", kind="full_backward", role="grad_input"), gx)
    # deprecated hook on a single-op conv: 3 grad_input entries (input, weight, bias)
    old = rec_old.trace.events
    dep = old[(old.kind == "backward") & (old.role == "grad_input")]
    assert len(dep) == 3
    torch.testing.assert_close(rec_old.trace.find(kind="backward", role="grad_output"), tens)
    post = conv[conv.kind == "post_accumulate_grad"]
    assert set(post["index"]) == {"weight", "bias"}
    torch.testing.assert_close(rec.trace.find(layer="conv", kind="post_accumulate_grad",
                                              index="weight"), w_grad)
    # phases are ordered: every forward event precedes every backward event
    assert ev[ev.phase == "forward"].seq.max() < ev[ev.phase == "backward"].seq.min()


def test_full_backward_hook_before_inplace_relu_is_explained(no_leak):
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    with no_leak(model):
        with pytest.raises(HookKindError, match="tensor") as err:
            with hooklab.record(model, "fc", hooks={"bn1": ["full_backward"]}) as rec:
                rec.run(torch.randn(1, 3, 32, 32))
    assert "bn1" in str(err.value) and "inplace" in str(err.value)
    # also when the user runs the model directly inside the block
    with no_leak(model):
        with pytest.raises(HookKindError):
            with hooklab.record(model, "fc", hooks={"bn1": ["full_backward"]}):
                model(torch.randn(1, 3, 32, 32)).sum().backward()


def test_post_accumulate_on_parameterless_module_is_explained(no_leak):
    m = SimpleModel()
    with no_leak(m):
        with pytest.raises(HookKindError, match="no trainable parameters"):
            with hooklab.record(m, hooks={"relu": ["post_accumulate_grad"]}):
                pass


def test_unknown_hook_kind():
    with pytest.raises(HookKindError, match="known"):
        hooklab.record(SimpleModel(), hooks={"conv": ["sideways"]})


def test_budget_keeps_statistics_beyond_it(cnn):
    x = torch.randn(4, 3, 32, 32)
    with hooklab.record(cnn, max_bytes=200_000) as rec:
        rec.run(x)
    tr = rec.trace
    assert tr.truncated and tr.stored_bytes <= 200_000
    ev = tr.events
    assert (ev.key == "").any() and (ev.key != "").any()
    assert ev.norm.notna().all()
    stored = sum(tr.tensor(k).numel() * 4 for k in set(ev.key) if k)
    assert stored == tr.stored_bytes
    with hooklab.record(cnn, keep_tensors=False) as rec2:
        rec2.run(x)
    assert (rec2.trace.events.key == "").all() and not rec2.trace.tensor_keys()
    # statistics are the same with or without tensors
    a = rec.trace.events.drop(columns="key")
    b = rec2.trace.events.drop(columns="key")
    assert a.equals(b)


def test_stored_tensors_are_cpu_float32_detached_copies():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True)).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    with hooklab.record(m, "0") as rec:
        out = m(x)
    t = rec.trace.find(layer="0", role="output")
    assert t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad
    # the in-place ReLU changed `out` afterwards; the stored copy kept the pre-ReLU values
    assert float(t.min()) < 0 <= float(out.min())
    assert rec.trace.events.iloc[-1]["dtype"] == "torch.float64"


def test_nan_and_inf_are_recorded_and_flagged():
    m = nn.Sequential(nn.Linear(3, 3))
    x = torch.tensor([[1.0, float("nan"), float("inf")]])
    with hooklab.record(m) as rec:
        m(x)
    row = rec.trace.select(role="input").iloc[0]
    assert row.nan_count == 1 and row.inf_count == 1 and row["max"] == 1.0


def test_threads_sharing_one_model_keep_their_own_events():
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    inputs = [torch.full((1, 3, 32, 32), float(i)) for i in range(6)]
    traces: dict[int, hooklab.Trace] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                with hooklab.record(model, "conv1", inputs=True) as rec:
                    rec.run(inputs[i], target=0)  # default: no .grad clearing
            traces[i] = rec.trace
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert total_hooks(model) == 0
    for i, tr in traces.items():
        ev = tr.events
        assert list(ev.role) == ["input", "output", "grad_output"]
        assert ev.iloc[0]["mean"] == float(i)


def test_run_targets_and_errors(cnn):
    x = torch.randn(3, 3, 32, 32)
    with hooklab.record(cnn, "fc2") as rec:
        out = rec.run(x, target=[1, 2, 3])
    g = rec.trace.find(role="grad_output")
    expect = torch.zeros_like(out)
    expect[torch.arange(3), torch.tensor([1, 2, 3])] = 1
    torch.testing.assert_close(g, expect)
    with pytest.raises(ValueError, match="targets"):
        with hooklab.record(cnn, "fc2") as rec:
            rec.run(x, target=[1])
    with pytest.raises(RuntimeError, match="inside"):
        hooklab.record(cnn).run(x)
    assert total_hooks(cnn) == 0


def test_param_grad_edit_on_parameterless_layer():
    with pytest.raises(EditError, match="no parameters"):
        hooklab.record(SimpleModel(), edits=[EditSpec("relu", hooklab.core.edits.zero(), "param_grad")])
