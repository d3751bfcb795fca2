"""The backward graph: its nodes are what grad_fn.next_functions walks by hand; every hook sits
on the node PyTorch calls it from (recorded inside the hook with
``torch._C._current_autograd_node()``); firing numbers follow the recorded events; no hook is
left behind."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

import hooklab
from hooklab.core import edits
from hooklab.models.zoo import SimpleCNN, SimpleModel
from hooklab.recording.graph import module_graph, tensor_graph
from hooklab.studies.lessons import TwiceplusOne

current = torch._C._current_autograd_node


def hand_walk(root):
    """Every node reachable through next_functions, and the edges, by hand (a stack, DFS)."""
    nodes, edges, stack = {id(root): root}, set(), [root]
    while stack:
        fn = stack.pop()
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue
            edges.add((id(fn), id(nxt)))
            if id(nxt) not in nodes:
                nodes[id(nxt)] = nxt
                stack.append(nxt)
    return nodes, edges


def assert_graph_is_the_walk(g):
    root = g.fn("n0")
    nodes, edges = hand_walk(root)
    assert {id(g.fn(n.id)) for n in g.nodes} == set(nodes)
    assert len(g.nodes) == len(nodes)
    assert {(id(g.fn(e.src)), id(g.fn(e.dst))) for e in g.edges} == edges
    for n in g.nodes:
        assert n.name == type(g.fn(n.id)).__name__


class Spy:
    """Hooks of every backward kind that record the autograd node running when they fire."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {}
        self.outputs: dict[str, object] = {}
        self.handles: list = []

    def _note(self, key: str) -> None:
        self.seen.setdefault(key, []).append(current())

    def tensor_hooks_on_outputs(self, model: nn.Module, names) -> None:
        for name in names:
            def fwd(m, i, out, _n=name):
                self.outputs[_n] = out.grad_fn
                def spy_tensor_hook(g, _n=_n):
                    self._note(f"tensor:{_n}")
                self.handles.append(out.register_hook(spy_tensor_hook))
            self.handles.append(model.get_submodule(name).register_forward_hook(fwd))

    def full(self, module: nn.Module, key: str) -> None:
        def spy_full_hook(m, gi, go):
            self._note(f"full_backward:{key}")

        def spy_pre_hook(m, go):
            self._note(f"full_backward_pre:{key}")
        self.handles += [module.register_full_backward_hook(spy_full_hook),
                         module.register_full_backward_pre_hook(spy_pre_hook)]

    def deprecated(self, module: nn.Module, key: str) -> None:
        def spy_deprecated_hook(m, gi, go):
            self._note(f"backward:{key}")

        def keep_out(m, i, out):
            self.outputs[key] = out.grad_fn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.handles.append(module.register_backward_hook(spy_deprecated_hook))
        self.handles.append(module.register_forward_hook(keep_out))

    def params(self, p: torch.Tensor, key: str) -> None:
        def spy_param_hook(g):
            self._note(f"tensor:{key}")

        def spy_post_hook(t):
            self._note(f"post_accumulate_grad:{key}")
        self.handles += [p.register_hook(spy_param_hook),
                         p.register_post_accumulate_grad_hook(spy_post_hook)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def spy_marks(g):
    """The graph's marks of the Spy's hooks: {kind:key -> node id}."""
    out = {}
    for h in g.hooks:
        fname = h.function.rsplit(".", 1)[-1]
        if not fname.startswith("spy_"):
            continue
        key = h.layer if h.role != "param_grad" else f"{h.layer}.{h.index}"
        out.setdefault(f"{h.kind}:{key}", []).append(h.node)
    return out


def assert_spies_on_their_nodes(g, spy):
    marks = spy_marks(g)
    assert spy.seen, "no spy hook fired"
    for key, nodes in spy.seen.items():
        assert key in marks, f"{key} not drawn; drawn: {sorted(marks)}"
        assert sorted(g.node_of(n) for n in nodes) == sorted(marks[key]), key


def test_simple_model_nodes_and_every_hook_kind_where_pytorch_calls_it(no_leak):
    torch.manual_seed(42)
    model = SimpleModel()
    x = torch.randn(1, 1, 4, 4)
    spy = Spy()
    spy.tensor_hooks_on_outputs(model, ["conv", "relu", "fc"])
    spy.full(model.conv, "conv")
    spy.deprecated(model.fc, "fc")
    spy.params(model.conv.weight, "conv.weight")
    try:
        with no_leak(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = module_graph(model, x, ["conv", "fc"], target="sum")
    finally:
        spy.remove()
    assert_graph_is_the_walk(g)
    assert g.fn("n0").__class__.__name__ == "SumBackward0"
    assert_spies_on_their_nodes(g, spy)
    # no input requires grad: the full hook fires from the output-side wrapper, with the pre hook
    full = spy_marks(g)["full_backward:conv"][0]
    assert g.node(full).is_hook_wrapper
    assert full == spy_marks(g)["full_backward_pre:conv"][0]
    # the deprecated hook sits on the module's output node (fc's last op)
    dep = spy_marks(g)["backward:fc"][0]
    assert g.node(dep).name == "AddmmBackward0" and g.node(dep).module == "fc"
    leaves = {n.variable for n in g.nodes if n.is_leaf}
    assert leaves == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}


def test_second_run_places_input_side_full_hook_where_it_fires(no_leak):
    torch.manual_seed(42)
    model = SimpleModel()
    x = torch.randn(1, 1, 4, 4)
    spy = Spy()
    spy.full(model.conv, "conv")
    try:
        with no_leak(model):
            g = module_graph(model, x, "conv", target="sum", input_grads=True)
    finally:
        spy.remove()
    assert_spies_on_their_nodes(g, spy)
    marks = spy_marks(g)
    assert marks["full_backward:conv"] != marks["full_backward_pre:conv"]
    node = g.node(marks["full_backward:conv"][0])
    assert node.is_hook_wrapper and node.module == "conv"
    assert any(g.node(e.dst).variable == "input" for e in g.edges if e.src == node.id)


def test_deprecated_hook_sits_on_the_last_node_of_a_multi_op_module(no_leak):
    model = nn.Sequential(TwiceplusOne())
    spy = Spy()
    spy.deprecated(model[0], "0")
    x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    try:
        with no_leak(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = module_graph(model, x, "0", target="sum")
    finally:
        spy.remove()
    assert_graph_is_the_walk(g)
    assert_spies_on_their_nodes(g, spy)
    last = g.node(spy_marks(g)["backward:0"][0])
    assert last.name == "AddBackward0"                  # x * 2 + 1: the add, not the mul
    assert g.fn(last.id) is spy.outputs["0"]
    assert {n.name for n in g.nodes if n.module == "0"} == {"AddBackward0", "MulBackward0"}


def test_simple_cnn_order_follows_the_recorded_events_and_edits_are_marked(no_leak):
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    kw = dict(hooks={"conv3": ["backward"], "fc1": ["full_backward", "full_backward_pre"]},
              edits={"conv2": edits.scale(0.5)}, param_grads=True)
    spy = Spy()
    spy.tensor_hooks_on_outputs(model, ["conv1", "conv2", "conv3", "pool"])
    try:
        with no_leak(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = module_graph(model, x, ["conv1", "conv2", "conv3"], **kw)
    finally:
        spy.remove()
    assert_graph_is_the_walk(g)
    assert_spies_on_their_nodes(g, spy)
    assert {n.module for n in g.nodes if n.name == "MaxPool2DWithIndicesBackward0"} == {"pool"}
    assert sorted(n.call for n in g.nodes if n.module == "pool") == [0, 1, 2]
    numbered = g.numbered()
    assert [h.order for h in numbered] == list(range(1, len(numbered) + 1))
    assert [h.seqs[0] for h in numbered] == sorted(h.seqs[0] for h in numbered)
    # the same settings recorded independently fire in the same order (first event per hook)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with hooklab.record(model, ["conv1", "conv2", "conv3"], keep_tensors=False, **kw) as rec:
            rec.run(x)
    ev = rec.trace.events.sort_values("seq")
    ev = ev[ev["phase"] == "backward"]
    expected = list(dict.fromkeys(
        (k, layer, i if r == "param_grad" or (r == "edited" and i not in ("0", "")) else "")
        for k, layer, r, i in zip(ev.kind, ev.layer, ev.role, ev["index"], strict=True)))
    got = [(h.kind, h.layer, h.index if h.role == "param_grad" else "") for h in numbered]
    assert got == expected
    conv = {h.layer: h for h in numbered if h.kind == "tensor"}
    assert conv["conv3"].order < conv["conv2"].order < conv["conv1"].order
    assert conv["conv2"].edit == "scale(0.5)" and conv["conv1"].edit == ""
    dep = next(h for h in g.hooks if h.kind == "backward")
    assert dep.node == conv["conv3"].node  # the deprecated hook: conv3's (only, last) node
    pre = next(h for h in g.hooks if h.kind == "full_backward_pre" and h.owner == "hooklab")
    full = next(h for h in g.hooks if h.kind == "full_backward" and h.owner == "hooklab")
    assert pre.order < full.order  # the pre hook sees grad_output before the module's backward
    assert g.node(pre.node).is_hook_wrapper and g.node(full.node).is_hook_wrapper


def test_resnet_block_in_place_relu_keeps_tensor_hooks_on_their_nodes(no_leak):
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    x = torch.randn(1, 8, 6, 6)
    spy = Spy()
    spy.tensor_hooks_on_outputs(block, ["conv1", "bn1", "conv2", "bn2"])
    try:
        with no_leak(block):
            g = module_graph(block, x, ["conv1", "bn1", "relu", "conv2", "bn2"], target="sum")
    finally:
        spy.remove()
    assert_graph_is_the_walk(g)
    assert_spies_on_their_nodes(g, spy)
    bn1 = g.node(spy_marks(g)["tensor:bn1"][0])
    assert bn1.name == "NativeBatchNormBackward0"      # not the in-place ReLU that follows
    relu_calls = sorted(n.call for n in g.nodes if n.module == "relu")
    assert relu_calls == [0, 1]
    small = g.collapsed()
    assert len(small.nodes) < len(g.nodes)
    assert {h.node for h in small.hooks} <= {n.id for n in small.nodes}
    assert {n.module for n in small.nodes if n.name == "module"} >= {"conv1", "bn1", "conv2"}


def test_tensor_graph_of_the_seed_example():
    x = torch.tensor([2.0], requires_grad=True)
    y = x ** 2
    z = y ** 3
    where = []

    def halve(grad):
        where.append(current())
        return grad / 2
    h = y.register_hook(halve)
    try:
        g = tensor_graph(z, {"x": x, "y": y, "z": z})
        z.backward()
    finally:
        h.remove()
    assert_graph_is_the_walk(g)
    assert [n.name for n in g.nodes] == ["PowBackward0", "PowBackward0", "AccumulateGrad"]
    assert [n.variable for n in g.nodes] == ["z", "y", "x"]
    (mark,) = g.hooks
    assert mark.kind == "tensor" and mark.layer == "y"
    assert g.node_of(where[0]) == mark.node == "n1"
    assert x.grad.item() == pytest.approx(96.0)
    xr = x.detach().requires_grad_()
    (ref,) = torch.autograd.grad((xr ** 2) ** 3, [xr])
    assert ref.item() == pytest.approx(192.0)


def test_the_callers_grads_come_back():
    model = SimpleModel()
    model(torch.randn(1, 1, 4, 4)).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    module_graph(model, torch.randn(1, 1, 4, 4), "conv", param_grads=True)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, before[n]), n


def test_no_hook_left_after_an_exception(no_leak):
    model = SimpleModel()

    def bad_target(out):
        raise ZeroDivisionError("boom")
    with no_leak(model), pytest.raises(ZeroDivisionError):
        module_graph(model, torch.randn(1, 1, 4, 4), "conv", target=bad_target)
    assert hooklab.hooks_on(model).empty
